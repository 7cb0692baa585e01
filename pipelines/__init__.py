"""ZenML pipelines: they only wire steps together."""
