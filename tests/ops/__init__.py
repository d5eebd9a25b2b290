"""listener.ops: the operator actions."""
