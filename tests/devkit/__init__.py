"""listener.devkit: the development tooling."""
