"""SQL that makes the server take its time, per backend."""

from __future__ import annotations


def sleep_query(backend: str, seconds: float) -> str:
    """A statement that sleeps ``seconds`` on the server (PostgreSQL or MariaDB)."""
    return f"SELECT pg_sleep({seconds})" if backend == "postgres" else f"SELECT SLEEP({seconds})"


def slow_query(backend: str) -> str:
    """About 20 ms of server work, on any backend."""
    if backend == "sqlite":
        # SQLite has no sleep: a recursive count takes a few milliseconds.
        return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT count(*) FROM c"
    return sleep_query(backend, 0.02)
