"""The stores layer: everything that talks to DuckDB, PostgreSQL and ClickHouse.

Sinks (writes) and analytics (reads) both depend on this package, and on
nothing of each other. One module per backend, each converting its driver's
errors at its boundary into :mod:`sms_replies.stores.errors`:

- :mod:`.ddl`: the tables (``replies``, ``campaigns``, ``optouts``) of every
  store, generated from the column lists of :mod:`sms_replies.schema`; pure.
- :mod:`.duckdb`: ``connect(path, read_only=, timeout=)`` (lock retry),
  ``ensure_tables(con)``, ``write_batch(con, replies, decisions)``.
- :mod:`.duckdb_endpoint`: the DuckDB sink's loopback endpoint through which
  other processes run statements while the sink owns the file.
- :mod:`.postgres`: ``connect(dsn, timeout=)``, ``create_pool(...)``,
  ``await ensure_tables(conn, schema)``, ``await write_batch(...)``.
- :mod:`.clickhouse`: ``ClickHouseSettings``, ``detect_features(client)``,
  ``ensure_tables(client, database, features)``, ``write_batch(...)``,
  ``read_sql`` / ``optouts_sql`` (readers use FINAL).
- :mod:`.manage`: data management: retention and erasure in every store.

The opt-out list (``optouts``): one row per sender, the latest decision
(:mod:`sms_replies.optout` has the rule). DuckDB and PostgreSQL keep it with an
upsert that only replaces an earlier decision; ClickHouse keeps every insert
and collapses them with ``FINAL`` (its ``version`` column orders them).
"""
