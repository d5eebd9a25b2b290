"""provisioner.storage: SQLite helpers."""
