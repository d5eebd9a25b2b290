"""Checks over the whole tree: import layering, PROJECT.yaml, suppressions."""
