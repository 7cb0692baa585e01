"""ZenML stack component flavors of this project (registered by stacks/register.sh)."""
