"""The `amaimedia` command."""
