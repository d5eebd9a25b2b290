"""listener.writeback: the transaction manager."""
