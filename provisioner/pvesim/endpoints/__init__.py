"""What each PVE endpoint does, one module per group of operations.

Every public method takes the store's lock, checks as PVE does before answering, and (for the
operations PVE runs as a worker) starts a UPID task whose worker applies the effect later.
"""
