"""listener.runtime and listener.config: what the daemon loads and serves."""
