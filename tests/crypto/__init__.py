"""listener.crypto, against independent implementations."""
