"""listener.chain: RPC, heads, log ranges, prefetch, journal, replay, reorgs."""
