"""listener.cli, run as real commands."""
