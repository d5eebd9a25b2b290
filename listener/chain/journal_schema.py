"""The journal's SQLite schema, as the ordered migrations :func:`provisioner.storage.sqlite_db.migrate`
applies (the version is the count applied; never edit a released one, append a new one)."""

MIGRATIONS = (
    """
    CREATE TABLE chain_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        chain_id INTEGER,
        cursor INTEGER,
        cursor_hash TEXT,
        chain_time INTEGER,
        head INTEGER,
        confirmed_head INTEGER,
        halted_reason TEXT,
        updated_at INTEGER
    );
    INSERT INTO chain_state (id) VALUES (1);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        block_number INTEGER NOT NULL,
        block_hash TEXT NOT NULL,
        tx_hash TEXT NOT NULL,
        log_index INTEGER NOT NULL,
        address TEXT NOT NULL,
        name TEXT NOT NULL,
        subscription_id INTEGER,
        plan_id INTEGER,
        args TEXT NOT NULL,
        rejected TEXT,
        UNIQUE (block_hash, log_index)
    );
    CREATE INDEX events_block ON events(block_number);
    CREATE TABLE plans (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        price_cents INTEGER NOT NULL,
        active INTEGER NOT NULL,
        updated_block INTEGER NOT NULL
    );
    CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY,
        plan_id INTEGER NOT NULL,
        subscriber TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        cancelled INTEGER NOT NULL DEFAULT 0,
        cancelled_at INTEGER,
        user_encrypted BLOB,
        created_block INTEGER NOT NULL,
        updated_block INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        token_id INTEGER,
        nft_expires_at INTEGER,
        credential_note TEXT,
        last_error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER
    );
    CREATE TABLE transactions (
        id INTEGER PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        subscription_id INTEGER,
        sender TEXT NOT NULL,
        nonce INTEGER NOT NULL,
        raw_tx BLOB NOT NULL,
        tx_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        block_number INTEGER,
        result TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX transactions_nonce ON transactions(sender, nonce);
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        subscription_id INTEGER NOT NULL,
        step TEXT NOT NULL,
        phase TEXT NOT NULL CHECK (phase IN ('started', 'done', 'failed')),
        detail TEXT,
        at INTEGER NOT NULL
    );
    CREATE INDEX steps_subscription ON steps(subscription_id)
    """,
    # 2: reorg safety. Events from unconfirmed blocks are journaled but not applied to the
    # facts until their block is confirmed (``applied``); ``applied_block`` is the confirmed
    # cursor; ``blocks`` is the window of recent block hashes used to find the common
    # ancestor after a reorg; ``reorgs`` is their history for status and alerts.
    """
    ALTER TABLE events ADD COLUMN applied INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE events ADD COLUMN block_time INTEGER;
    CREATE INDEX events_unapplied ON events(applied, block_number, log_index);
    ALTER TABLE chain_state ADD COLUMN applied_block INTEGER;
    UPDATE chain_state SET applied_block = cursor;
    CREATE TABLE blocks (
        number INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        timestamp INTEGER
    );
    INSERT INTO blocks (number, hash)
        SELECT cursor, cursor_hash FROM chain_state WHERE cursor IS NOT NULL AND cursor_hash IS NOT NULL;
    CREATE TABLE reorgs (
        id INTEGER PRIMARY KEY,
        detected_at INTEGER NOT NULL,
        old_cursor INTEGER NOT NULL,
        ancestor INTEGER,
        dropped_events INTEGER NOT NULL,
        deep INTEGER NOT NULL
    )
    """,
    # 3: which VM record the NFT's encrypted connection details describe (a VM rebuilt after
    # a renewal needs updateUserEncrypted); NULL when the NFT carries no details.
    """
    ALTER TABLE subscriptions ADD COLUMN credentials_vm INTEGER
    """,
    # 4: transactions moved to the transaction manager's own tables (listener/writeback/tx_store.py).
    """
    DROP INDEX transactions_nonce;
    DROP TABLE transactions
    """,
    # 5: the unapplied-events index only holds unapplied rows (a handful near the head): a
    # full index on (applied, block, index) cost ~5 us of the ~12 us per journaled event.
    """
    DROP INDEX events_unapplied;
    CREATE INDEX events_unapplied ON events(block_number, log_index) WHERE applied = 0
    """,
    # 6: a journal row's identity is indexed in chain order. UNIQUE (block_hash, log_index)
    # put every insert at a random place in a hash-keyed B-tree: each commit rewrote most
    # of that index's pages, ~9 us per event at 100k rows and growing with the table.
    # (block_number, log_index, block_hash) is appended to, and replaces events_block.
    # SQLite cannot drop a table constraint, so the table is rebuilt.
    """
    CREATE TABLE events_v6 (
        id INTEGER PRIMARY KEY,
        block_number INTEGER NOT NULL,
        block_hash TEXT NOT NULL,
        tx_hash TEXT NOT NULL,
        log_index INTEGER NOT NULL,
        address TEXT NOT NULL,
        name TEXT NOT NULL,
        subscription_id INTEGER,
        plan_id INTEGER,
        args TEXT NOT NULL,
        rejected TEXT,
        applied INTEGER NOT NULL DEFAULT 1,
        block_time INTEGER,
        UNIQUE (block_number, log_index, block_hash)
    );
    INSERT INTO events_v6 (id, block_number, block_hash, tx_hash, log_index, address, name,
                           subscription_id, plan_id, args, rejected, applied, block_time)
        SELECT id, block_number, block_hash, tx_hash, log_index, address, name,
               subscription_id, plan_id, args, rejected, applied, block_time FROM events;
    DROP TABLE events;
    ALTER TABLE events_v6 RENAME TO events;
    CREATE INDEX events_unapplied ON events(block_number, log_index) WHERE applied = 0
    """,
    # 7: the deployment this database belongs to (listener/chain/deployment.py): written once,
    # on the first open that knows the chain id and the contracts; never changed afterwards.
    """
    CREATE TABLE deployment (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        deployment_id TEXT NOT NULL,
        chain_id INTEGER NOT NULL,
        subscription_contract TEXT NOT NULL,
        nft_contract TEXT,
        written_at INTEGER NOT NULL
    )
    """,
)
