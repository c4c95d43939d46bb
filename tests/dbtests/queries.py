"""SQL per backend: statements that make the server take its time, and the connection's own id."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db_core import UnitOfWork

# The server's id of the connection a statement runs on (what a kill names).
OWN_ID = {"postgres": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


async def own_id(backend: str, sessionmaker: async_sessionmaker[AsyncSession] | None = None) -> int:
    """The id of the connection a fresh unit of work gets."""
    async with UnitOfWork(sessionmaker) as session:
        return int((await session.execute(text(OWN_ID[backend]))).scalar_one())


def sleep_query(backend: str, seconds: float) -> str:
    """A statement that sleeps ``seconds`` on the server (PostgreSQL or MariaDB)."""
    return f"SELECT pg_sleep({seconds})" if backend == "postgres" else f"SELECT SLEEP({seconds})"


def slow_query(backend: str) -> str:
    """About 20 ms of server work, on any backend."""
    if backend == "sqlite":
        # SQLite has no sleep: a recursive count takes a few milliseconds.
        return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT count(*) FROM c"
    return sleep_query(backend, 0.02)
