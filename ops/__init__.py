"""Command-line tools around the pipelines: validate a run config, check the stack, trace and summarise runs."""
