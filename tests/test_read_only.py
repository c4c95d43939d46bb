"""Read-only units of work on every backend, without replicas: READ ONLY transactions on the primary."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text

from db_core import (
    READ_ONLY_NOTE,
    DatabaseSettings,
    UnitOfWork,
    UnitOfWorkError,
    configure,
    dispose_engine,
    get_engine,
)


async def count(schema: SimpleNamespace) -> int:
    async with UnitOfWork(read_only=True) as session:
        return int(await session.scalar(select(func.count()).select_from(schema.User)) or 0)


async def test_a_write_is_refused_and_says_why(schema: SimpleNamespace) -> None:
    with pytest.raises(sa_exc.DBAPIError) as refused:
        async with UnitOfWork(read_only=True) as session:
            session.add(schema.User(name="refused"))
    assert READ_ONLY_NOTE in getattr(refused.value, "__notes__", [])
    assert await count(schema) == 0
    # The pooled connection the read-only unit used writes again in a read-write one.
    async with UnitOfWork() as session:
        session.add(schema.User(name="written"))
    assert await count(schema) == 1
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_reads_in_a_read_only_unit(schema: SimpleNamespace) -> None:
    async with UnitOfWork() as session:
        session.add_all([schema.User(name="a"), schema.User(name="b")])
    async with UnitOfWork(read_only=True) as session:
        names = (await session.scalars(select(schema.User.name).order_by(schema.User.name))).all()
    assert list(names) == ["a", "b"]


async def test_nesting(schema: SimpleNamespace) -> None:
    async with UnitOfWork() as outer:
        outer.add(schema.User(name="uncommitted"))
        await outer.flush()
        # A read-only unit inside a read-write one joins it: it sees the outer unit's writes.
        async with UnitOfWork(read_only=True) as inner:
            assert inner is outer
            assert await inner.scalar(select(func.count()).select_from(schema.User)) == 1
    async with UnitOfWork(read_only=True):
        with pytest.raises(UnitOfWorkError, match="read-write UnitOfWork cannot be opened inside a read-only"):
            async with UnitOfWork():
                pass


async def test_sqlite_readers_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    """On SQLite a read-only unit begins deferred: it reads while a writer holds the write lock."""
    configure(DatabaseSettings(type="sqlite", name=str(tmp_path / "x.db"), pool_size=2, _env_file=None))
    try:
        async with UnitOfWork() as session:
            await session.execute(text("CREATE TABLE t (x INT)"))
            await session.execute(text("INSERT INTO t VALUES (1)"))
        writer_holds_lock = asyncio.Event()
        release = asyncio.Event()

        async def writer() -> None:
            async with UnitOfWork() as session:
                await session.execute(text("INSERT INTO t VALUES (2)"))  # BEGIN IMMEDIATE: the write lock
                writer_holds_lock.set()
                await release.wait()

        async def read() -> int:
            async with UnitOfWork(read_only=True) as session:
                return int(await session.scalar(text("SELECT count(*) FROM t")) or 0)

        task = asyncio.create_task(writer())
        await writer_holds_lock.wait()
        try:
            # Bounded: a reader that waited for the lock would wait DB_SQLITE_BUSY_TIMEOUT_SECONDS (5 s).
            assert await asyncio.wait_for(read(), 2) == 1
        finally:
            release.set()
            await task
        assert await read() == 2
    finally:
        await dispose_engine()
        configure(None)


@pytest.mark.parametrize("settings", ["postgres", "mysql"], indirect=True)
async def test_a_read_only_unit_reads_one_snapshot(schema: SimpleNamespace) -> None:
    # A list and its count (two statements) must agree, whatever commits between them. (SQLite's
    # transactions are serializable, and its one connection admits no second unit meanwhile.)
    async with UnitOfWork() as session:
        session.add(schema.User(name="before"))
    async with UnitOfWork(read_only=True) as reader:
        assert await reader.scalar(select(func.count()).select_from(schema.User)) == 1
        async with asyncio.timeout(10):
            await asyncio.create_task(_add_user(schema, "between"))  # its own task: a unit of its own
        assert await reader.scalar(select(func.count()).select_from(schema.User)) == 1
    assert await count(schema) == 2


async def _add_user(schema: SimpleNamespace, name: str) -> None:
    async with UnitOfWork() as session:
        session.add(schema.User(name=name))


@pytest.mark.parametrize("settings", ["postgres", "mysql"], indirect=True)
async def test_a_read_write_unit_sees_what_others_committed_since_its_first_read(schema: SimpleNamespace) -> None:
    # READ COMMITTED on both servers (MariaDB's own default would keep the first read's snapshot):
    # a unit that lost a race to another's insert can read the row it collided with.
    async with UnitOfWork() as session:
        assert await session.scalar(select(func.count()).select_from(schema.User)) == 0
        async with asyncio.timeout(10):
            await asyncio.create_task(_add_user(schema, "committed-meanwhile"))
        names = (await session.scalars(select(schema.User.name))).all()
    assert list(names) == ["committed-meanwhile"]
