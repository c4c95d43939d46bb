"""db_sqlite's connection: one call into the database thread per statement, with the guarantees of four.

``BEGIN IMMEDIATE`` travels with a transaction's first statement and a
statement fetches its first rows in the same call. These tests show that
nothing is lost for it: a statement never runs outside its transaction, results
of every size arrive whole (and a streamed one in pieces), and a transaction
that ran nothing leaves nothing open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from db_core import DatabaseSettings, UnitOfWork, configure, dispose_engine, get_engine
from db_sqlite.connection import PREFETCH, Connection


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "calls.db"
    configure(DatabaseSettings(type="sqlite", name=str(path), sqlite_busy_timeout_seconds=0.2, _env_file=None))
    async with get_engine().begin() as conn:
        await conn.execute(text("CREATE TABLE numbers (n INTEGER PRIMARY KEY)"))
    yield path
    await dispose_engine()
    configure(None)


async def test_a_unit_of_work_is_two_calls_into_the_database_thread(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = Connection._execute

    async def counted(self: Connection, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(self, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(Connection, "_execute", counted)
    async with UnitOfWork() as session:
        assert (await session.execute(text("SELECT count(*) FROM numbers"))).scalar_one() == 0
    assert calls == 2  # BEGIN IMMEDIATE with the SELECT, then COMMIT
    calls = 0
    async with get_engine().begin():
        pass
    assert calls == 0  # a transaction that ran nothing needs nothing


async def test_a_statement_never_runs_outside_its_transaction(database: Path) -> None:
    """When BEGIN IMMEDIATE fails (another process holds the lock), the INSERT sent with it does not run."""
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock past the 0.2 s busy timeout
        with pytest.raises(OperationalError, match="locked"):
            async with UnitOfWork() as session:
                await session.execute(text("INSERT INTO numbers (n) VALUES (1)"))
        other.execute("ROLLBACK")
    finally:
        other.close()
    async with UnitOfWork() as session:
        assert (await session.execute(text("SELECT count(*) FROM numbers"))).scalar_one() == 0


async def test_a_transaction_that_ran_nothing_holds_no_lock(database: Path) -> None:
    async with get_engine().connect() as conn:
        await conn.begin()
        other = sqlite3.connect(database, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # would fail at once if the engine's transaction held the lock
            other.execute("ROLLBACK")
        finally:
            other.close()
        await conn.rollback()


@pytest.mark.parametrize("rows", [0, 1, PREFETCH - 1, PREFETCH, PREFETCH + 1, 3 * PREFETCH + 7])
async def test_results_of_every_size_arrive_whole(database: Path, rows: int) -> None:
    async with UnitOfWork() as session:
        if rows:
            inserted = await session.execute(
                text("INSERT INTO numbers (n) VALUES (:n)"), [{"n": n} for n in range(rows)]
            )
            assert inserted.rowcount == rows
        returned = (await session.execute(text("DELETE FROM numbers RETURNING n"))).scalars().all()
        assert sorted(returned) == list(range(rows))
    async with UnitOfWork() as session:
        assert (await session.execute(text("SELECT count(*) FROM numbers"))).scalar_one() == 0


async def test_a_streamed_result_arrives_in_pieces_and_the_connection_stays_usable(database: Path) -> None:
    total = 5 * PREFETCH
    async with UnitOfWork() as session:
        await session.execute(text("INSERT INTO numbers (n) VALUES (:n)"), [{"n": n} for n in range(total)])
    async with UnitOfWork() as session:
        stream = await session.stream(text("SELECT n FROM numbers ORDER BY n"))
        seen = []
        async for partition in stream.partitions(100):
            seen.extend(row[0] for row in partition)
            if len(seen) >= 2 * PREFETCH:
                break  # abandoned half-way: its cursor is closed with the result
        await stream.close()
        assert seen == list(range(len(seen)))
        assert (await session.execute(text("SELECT max(n) FROM numbers"))).scalar_one() == total - 1
