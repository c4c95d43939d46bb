"""SQLite specifics: foreign keys, WAL, concurrent writers, :memory: (done means 8)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from db_core import DatabaseSettings, UnitOfWork, configure, dispose_engine, get_connector_instance, get_engine
from dbtests.models import Base, Profile, User


@pytest.fixture(params=["file", "memory"])
async def sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SimpleNamespace]:
    name = str(tmp_path / "app.db") if request.param == "file" else ":memory:"
    configure(DatabaseSettings(type="sqlite", name=name, _env_file=None))
    async with get_engine().begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        yield SimpleNamespace(kind=request.param, path=tmp_path / "app.db")
    finally:
        await dispose_engine()
        configure(None)


async def count_users() -> int:
    async with UnitOfWork() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


async def test_foreign_key_violation_raises(sqlite: SimpleNamespace) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        async with UnitOfWork() as session:
            session.add(Profile(user_id=4242, bio="orphan"))
    async with UnitOfWork() as session:
        assert (await session.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1


async def test_file_database_is_in_wal_mode(tmp_path: Path) -> None:
    configure(DatabaseSettings(type="sqlite", name=str(tmp_path / "wal.db"), _env_file=None))
    try:
        async with get_engine().connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (tmp_path / "wal.db").exists()
    finally:
        await dispose_engine()
        configure(None)


async def test_default_name_is_app_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configure(DatabaseSettings(type="sqlite", _env_file=None))
    try:
        async with get_engine().connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert (tmp_path / "app.db").exists()
        assert not (tmp_path / "app").exists()
    finally:
        await dispose_engine()
        configure(None)


async def test_twenty_concurrent_writers_no_lock_errors(sqlite: SimpleNamespace) -> None:
    async def writer(index: int) -> None:
        async with UnitOfWork() as session:
            for row in range(50):
                session.add(User(name=f"w{index}-{row}"))
                if row == 0:
                    await session.flush()
                    await asyncio.sleep(0.01)  # hold the transaction while others want in
            await session.flush()

    results = await asyncio.gather(*(writer(i) for i in range(20)), return_exceptions=True)
    assert [r for r in results if r is not None] == []
    assert await count_users() == 1000


async def test_a_failing_unit_leaves_the_others_rows(sqlite: SimpleNamespace) -> None:
    async def ok(index: int) -> None:
        async with UnitOfWork() as session:
            session.add(User(name=f"ok{index}"))
            await asyncio.sleep(0.005)

    async def failing() -> None:
        async with UnitOfWork() as session:
            session.add(User(name="bad"))
            await session.flush()
            await asyncio.sleep(0.005)
            raise RuntimeError("this unit fails")

    results = await asyncio.gather(ok(0), failing(), ok(1), failing(), ok(2), return_exceptions=True)
    assert [type(r) for r in results if r is not None] == [RuntimeError, RuntimeError]
    async with UnitOfWork() as session:
        names = sorted((await session.execute(select(User.name))).scalars())
    assert names == ["ok0", "ok1", "ok2"]


async def test_nested_unit_of_work_uses_savepoints(sqlite: SimpleNamespace) -> None:
    async with UnitOfWork() as outer:
        outer.add(User(name="outer"))
        with pytest.raises(ValueError, match="inner"):
            async with UnitOfWork() as inner:
                inner.add(User(name="inner"))
                await inner.flush()
                raise ValueError("inner")
    async with UnitOfWork() as session:
        assert list((await session.execute(select(User.name))).scalars()) == ["outer"]


def test_memory_database_is_shared_across_event_loops() -> None:
    configure(DatabaseSettings(type="sqlite", name=":memory:", _env_file=None))
    try:

        async def create() -> None:
            async with get_engine().begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            async with UnitOfWork() as session:
                session.add(User(name="from the first loop"))

        async def read() -> list[str]:
            async with UnitOfWork() as session:
                return list((await session.execute(select(User.name))).scalars())

        asyncio.run(create())
        assert asyncio.run(read()) == ["from the first loop"]
    finally:
        asyncio.run(dispose_engine())
        configure(None)


async def test_memory_database_is_gone_after_dispose() -> None:
    configure(DatabaseSettings(type="sqlite", name=":memory:", _env_file=None))
    async with get_engine().begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    connector = get_connector_instance()
    await dispose_engine()
    assert connector._keeper is None  # type: ignore[attr-defined]
    async with get_engine().connect() as conn:
        tables = (await conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))).scalars().all()
    assert tables == []
    await dispose_engine()
    configure(None)
