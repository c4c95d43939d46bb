"""The databases the benchmark runs on: a ``dbbench`` database of its own on each server, a SQLite file.

Each is created afresh with the two tables every workload uses: ``bench_items``
(10,000 rows, read by W2, W4 and W5) and ``bench_writes`` (W3 inserts into it). The Conduit
example's tables, for W6 and W7, are added beside them by :func:`conduit_load.seed`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import aiomysql
import aiosqlite
import asyncpg
from sqlalchemy.engine import URL, make_url

ROWS = 10_000
DATABASE = "dbbench"
POSTGRES_ADMIN = make_url(os.environ.get("DB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
MYSQL_ADMIN = make_url(os.environ.get("DB_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))

SCHEMA = [
    "CREATE TABLE bench_items (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)",
    "CREATE TABLE bench_writes (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)",
]


@dataclass(frozen=True)
class Backend:
    """Where one backend's benchmark database is."""

    name: str  # postgres, mysql, sqlite
    host: str
    port: int | None
    user: str
    password: str
    database: str  # SQLite: the file's path

    def url(self, driver: str) -> URL:
        """The SQLAlchemy URL with ``driver`` (``postgresql+asyncpg``, ...)."""
        if self.name == "sqlite":
            return URL.create(driver, database=self.database)
        return URL.create(driver, self.user, self.password or None, self.host, self.port, self.database)

    @classmethod
    def from_url(cls, name: str, url: str) -> Backend:
        """The database a SQLAlchemy ``url`` names (W5's app gets it this way)."""
        parts = make_url(url)
        return cls(name, parts.host or "", parts.port, parts.username or "", parts.password or "", parts.database or "")

    def through(self, host: str, port: int) -> Backend:
        """The same database reached at ``host:port`` (a relay)."""
        return replace(self, host=host, port=port)


async def prepare(name: str, workdir: Path) -> Backend:
    """A fresh benchmark database for ``name``, with its tables and rows."""
    rows = [(i, f"item-{i}") for i in range(1, ROWS + 1)]
    if name == "postgres":
        # WITH (FORCE) ends only this database's own sessions (a crashed earlier run's).
        await _postgres_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", f"CREATE DATABASE {DATABASE}")
        backend = Backend(
            name,
            POSTGRES_ADMIN.host or "127.0.0.1",
            POSTGRES_ADMIN.port or 5432,
            POSTGRES_ADMIN.username or "postgres",
            POSTGRES_ADMIN.password or "",
            DATABASE,
        )
        conn = await asyncpg.connect(
            host=backend.host,
            port=backend.port,
            user=backend.user,
            password=backend.password or None,
            database=DATABASE,
        )
        try:
            for statement in SCHEMA:
                await conn.execute(statement)
            await conn.copy_records_to_table("bench_items", records=rows)
            await conn.execute("ANALYZE bench_items")
        finally:
            await conn.close()
        return backend
    if name == "mysql":
        backend = Backend(
            name,
            MYSQL_ADMIN.host or "127.0.0.1",
            MYSQL_ADMIN.port or 3306,
            MYSQL_ADMIN.username or "root",
            MYSQL_ADMIN.password or "",
            DATABASE,
        )
        conn = await aiomysql.connect(
            host=backend.host, port=backend.port, user=backend.user, password=backend.password, autocommit=True
        )
        try:
            async with conn.cursor() as cur:
                with warnings.catch_warnings():  # "Can't drop database 'dbbench'; database doesn't exist"
                    warnings.simplefilter("ignore", aiomysql.Warning)
                    await cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
                await cur.execute(f"CREATE DATABASE {DATABASE}")
                await cur.execute(f"USE {DATABASE}")
                for statement in SCHEMA:
                    await cur.execute(statement)
                await cur.executemany("INSERT INTO bench_items (id, name) VALUES (%s, %s)", rows)
        finally:
            conn.close()
        return backend
    path = workdir / "bench.db"
    for leftover in workdir.glob("bench.db*"):  # noqa: ASYNC240 - before any connection, nothing to block
        leftover.unlink()
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        for statement in SCHEMA:
            await conn.execute(statement)
        await conn.executemany("INSERT INTO bench_items (id, name) VALUES (?, ?)", rows)
        await conn.commit()
    return Backend(name, "", None, "", "", str(path))


async def drop(backend: Backend) -> None:
    """Drop a server's benchmark database (a SQLite file goes with its directory)."""
    if backend.name == "postgres":
        await _postgres_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    elif backend.name == "mysql":
        conn = await aiomysql.connect(
            host=backend.host, port=backend.port, user=backend.user, password=backend.password, autocommit=True
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        finally:
            conn.close()


async def _postgres_admin(*statements: str) -> None:
    """Run ``statements`` on the admin database of the PostgreSQL server."""
    admin = await asyncpg.connect(
        host=POSTGRES_ADMIN.host,
        port=POSTGRES_ADMIN.port or 5432,
        user=POSTGRES_ADMIN.username,
        password=POSTGRES_ADMIN.password,
        database=POSTGRES_ADMIN.database,
    )
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()
