"""The contenders: the same three operations, each as its own kind of code would write them.

- ``raw``: the driver alone (asyncpg's pool, aiomysql's pool, aiosqlite connections): the
  physical limit.
- ``sqlalchemy``: a bare ``async_sessionmaker`` + ``AsyncSession`` with SQLAlchemy's defaults: the
  floor a layer on top of it should never fall below.
- ``seed``: the original design (``pool_pre_ping=True``, ``expire_on_commit=False``).
- ``db``: this library, ``async with UnitOfWork() as session``.

Every operation is one unit of work: a transaction that commits. W1 runs ``SELECT 1``, W2 reads
one row of ``bench_items`` by primary key, W3 inserts one row into ``bench_writes``. W6 and W7
(:mod:`conduit_load`) set up ``sqlalchemy`` and ``db`` with :func:`bare_sessionmaker` and
:func:`library`, as here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiomysql
import aiosqlite
import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from backends import Backend
from db_core import DatabaseSettings, UnitOfWork, configure, dispose_engine

NAMES = ("raw", "sqlalchemy", "seed", "db")
DRIVERS = {"postgres": "postgresql+asyncpg", "mysql": "mysql+aiomysql", "sqlite": "sqlite+aiosqlite"}
SELECT_1 = text("SELECT 1")
GET = text("SELECT name FROM bench_items WHERE id = :id")
INSERT = text("INSERT INTO bench_writes (id, name) VALUES (:id, :name)")
_write_ids = itertools.count(1)


class Contender(Protocol):
    """One way of running the workloads' units of work."""

    async def select_1(self) -> None:
        """W1: ``SELECT 1`` in a fresh unit of work."""

    async def get(self, item: int) -> str:
        """W2: the name of ``bench_items`` row ``item``."""

    async def insert(self) -> None:
        """W3: insert one row into ``bench_writes`` and commit."""


@asynccontextmanager
async def started(name: str, backend: Backend, pool_size: int, max_overflow: int) -> AsyncIterator[Contender]:
    """Contender ``name`` on ``backend`` with a pool of ``pool_size`` + ``max_overflow``, closed afterwards."""
    if name == "raw":
        raw = await _raw(backend, pool_size, max_overflow)
        try:
            yield raw
        finally:
            await raw.close()
    elif name == "db":
        async with library(backend, pool_size, max_overflow):
            yield LibraryContender()
    else:
        async with bare_sessionmaker(name, backend, pool_size, max_overflow) as maker:
            yield SessionContender(maker)


def library_settings(backend: Backend, pool_size: int, max_overflow: int) -> DatabaseSettings:
    """The library's settings for ``backend``: only what is given here, no ``.env`` or stray ``DB_*`` variables."""
    return DatabaseSettings(
        type=backend.name,
        host=backend.host or "localhost",
        port=backend.port,
        user=backend.user or None,
        password=backend.password,
        name=backend.database,
        _env_file=None,
        # SQLite keeps its own pool (one connection: one writer at a time), as a user gets it.
        **({} if backend.name == "sqlite" else {"pool_size": pool_size, "max_overflow": max_overflow}),
    )


@asynccontextmanager
async def library(backend: Backend, pool_size: int, max_overflow: int) -> AsyncIterator[None]:
    """The library configured for ``backend`` (``UnitOfWork()`` works inside), its engine disposed afterwards."""
    configure(library_settings(backend, pool_size, max_overflow))
    try:
        yield
    finally:
        await dispose_engine()
        configure(None)


@asynccontextmanager
async def bare_sessionmaker(
    name: str, backend: Backend, pool_size: int, max_overflow: int
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Bare SQLAlchemy's sessionmaker for ``backend`` (``seed``: with the original design's settings)."""
    engine_args: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
    session_args: dict[str, Any] = {}
    if name == "seed":
        engine_args.update(pool_timeout=30, pool_recycle=1800, pool_pre_ping=True)
        session_args["expire_on_commit"] = False
    engine = create_async_engine(backend.url(DRIVERS[backend.name]), **engine_args)
    try:
        yield async_sessionmaker(engine, **session_args)
    finally:
        await engine.dispose()


class SessionContender:
    """``async with sessionmaker() as session, session.begin():``, bare SQLAlchemy's unit of work."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def select_1(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(SELECT_1)

    async def get(self, item: int) -> str:
        async with self.sessionmaker() as session, session.begin():
            return str((await session.execute(GET, {"id": item})).scalar_one())

    async def insert(self) -> None:
        row = next(_write_ids)
        async with self.sessionmaker() as session, session.begin():
            await session.execute(INSERT, {"id": row, "name": f"write-{row}"})


class LibraryContender:
    """``async with UnitOfWork() as session:``."""

    async def select_1(self) -> None:
        async with UnitOfWork() as session:
            await session.execute(SELECT_1)

    async def get(self, item: int) -> str:
        async with UnitOfWork() as session:
            return str((await session.execute(GET, {"id": item})).scalar_one())

    async def insert(self) -> None:
        row = next(_write_ids)
        async with UnitOfWork() as session:
            await session.execute(INSERT, {"id": row, "name": f"write-{row}"})


async def _raw(backend: Backend, pool_size: int, max_overflow: int) -> RawContender:
    if backend.name == "postgres":
        pool = await asyncpg.create_pool(
            host=backend.host,
            port=backend.port,
            user=backend.user,
            password=backend.password or None,
            database=backend.database,
            min_size=pool_size,
            max_size=pool_size + max_overflow,
        )
        return AsyncpgContender(pool)
    if backend.name == "mysql":
        mysql_pool = await aiomysql.create_pool(
            host=backend.host,
            port=backend.port,
            user=backend.user,
            password=backend.password,
            db=backend.database,
            minsize=pool_size,
            maxsize=pool_size + max_overflow,
            autocommit=False,
        )
        return AiomysqlContender(mysql_pool)
    connections: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
    for _ in range(pool_size):
        # Autocommit at the driver, so BEGIN and COMMIT are the statements sent, as in the other contenders.
        connections.put_nowait(await aiosqlite.connect(backend.database, isolation_level=None))
    return AiosqliteContender(connections)


class RawContender(Protocol):
    """A raw driver contender, which has a pool to close."""

    async def select_1(self) -> None: ...
    async def get(self, item: int) -> str: ...
    async def insert(self) -> None: ...
    async def close(self) -> None: ...


class AsyncpgContender:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def select_1(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetchval("SELECT 1")

    async def get(self, item: int) -> str:
        async with self.pool.acquire() as conn, conn.transaction():
            return str(await conn.fetchval("SELECT name FROM bench_items WHERE id = $1", item))

    async def insert(self) -> None:
        row = next(_write_ids)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO bench_writes (id, name) VALUES ($1, $2)", row, f"write-{row}")

    async def close(self) -> None:
        await self.pool.close()


class _StatementContender:
    """W1-W3 as SQL text in the driver's parameter style, each in a transaction of its own (:meth:`_run`)."""

    GET_SQL = ""
    INSERT_SQL = ""

    async def _run(self, statement: str, args: tuple[Any, ...] = ()) -> Any:
        raise NotImplementedError

    async def select_1(self) -> None:
        await self._run("SELECT 1")

    async def get(self, item: int) -> str:
        return str((await self._run(self.GET_SQL, (item,)))[0])

    async def insert(self) -> None:
        row = next(_write_ids)
        await self._run(self.INSERT_SQL, (row, f"write-{row}"))


class AiomysqlContender(_StatementContender):
    GET_SQL = "SELECT name FROM bench_items WHERE id = %s"
    INSERT_SQL = "INSERT INTO bench_writes (id, name) VALUES (%s, %s)"

    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def _run(self, statement: str, args: tuple[Any, ...] = ()) -> Any:
        async with self.pool.acquire() as conn:
            await conn.begin()
            async with conn.cursor() as cursor:
                await cursor.execute(statement, args)
                row = await cursor.fetchone()
            await conn.commit()
            return row

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()


class AiosqliteContender(_StatementContender):
    GET_SQL = "SELECT name FROM bench_items WHERE id = ?"
    INSERT_SQL = "INSERT INTO bench_writes (id, name) VALUES (?, ?)"

    def __init__(self, connections: asyncio.Queue[aiosqlite.Connection]) -> None:
        self.connections = connections

    async def _run(self, statement: str, args: tuple[Any, ...] = ()) -> Any:
        conn = await self.connections.get()
        try:
            await conn.execute("BEGIN")
            async with conn.execute(statement, args) as cursor:
                row = await cursor.fetchone()
            await conn.execute("COMMIT")
            return row
        finally:
            self.connections.put_nowait(conn)

    async def close(self) -> None:
        while not self.connections.empty():
            await self.connections.get_nowait().close()
