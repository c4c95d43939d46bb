"""No ROLLBACK when a connection returns to the pool after a finished transaction, and one when it is needed.

db-mysql and db-sqlite tell the pool whether a transaction is open from the
driver's own state (MySQL's status flags of the last reply, sqlite3's flag),
so a unit of work that committed costs no extra round trip, while a
connection returned with a transaction open is still rolled back.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from db_core import DatabaseSettings, UnitOfWork, configure, dispose_engine, get_engine
from db_core.testing import TurnCounter
from dbtests.servers import Server


async def test_mysql_unit_of_work_that_commits_sends_no_rollback(mysql_server: Server) -> None:
    relay = TurnCounter((mysql_server.host, mysql_server.port))
    await relay.start()
    configure(mysql_server.settings(port=relay.port, pool_size=1, max_overflow=0, pool_pre_ping=False))
    try:
        async with UnitOfWork() as session:  # connects
            await session.execute(text("SELECT 1"))
        relay.turns = 0
        for _ in range(10):
            async with UnitOfWork() as session:
                await session.execute(text("SELECT 1"))
        assert relay.turns == 20  # SELECT and COMMIT; no ROLLBACK on the way back to the pool
    finally:
        await dispose_engine()
        configure(None)
        await relay.close()


async def test_mysql_connection_returned_inside_a_transaction_is_rolled_back(mysql_server: Server) -> None:
    configure(mysql_server.settings(pool_size=1, max_overflow=0))
    try:
        async with get_engine().begin() as conn:
            await conn.execute(text("CREATE TABLE reset_probe (id INTEGER PRIMARY KEY)"))
        async with get_engine().connect() as conn:
            # Behind SQLAlchemy's back: it sees no transaction on this connection.
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.begin()
            async with driver.cursor() as cursor:
                await cursor.execute("INSERT INTO reset_probe (id) VALUES (1)")
        async with UnitOfWork() as session:  # the same (only) pooled connection
            assert (await session.execute(text("SELECT count(*) FROM reset_probe"))).scalar_one() == 0
    finally:
        async with get_engine().begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS reset_probe"))
        await dispose_engine()
        configure(None)


async def test_sqlite_unit_of_work_sends_begin_statement_commit_and_nothing_else(tmp_path: Path) -> None:
    configure(DatabaseSettings(type="sqlite", name=str(tmp_path / "reset.db"), _env_file=None))
    statements: list[str] = []
    try:
        async with get_engine().connect() as conn:
            await (await conn.get_raw_connection()).driver_connection.set_trace_callback(statements.append)
        async with UnitOfWork() as session:  # the same (only) pooled connection
            await session.execute(text("SELECT 1"))
        # No ping either: a database file cannot drop a connection.
        assert statements == ["BEGIN IMMEDIATE", "SELECT 1", "COMMIT"]
    finally:
        await dispose_engine()
        configure(None)


async def test_sqlite_connection_returned_inside_a_transaction_is_rolled_back(tmp_path: Path) -> None:
    configure(DatabaseSettings(type="sqlite", name=str(tmp_path / "reset.db"), _env_file=None))
    try:
        async with get_engine().begin() as conn:
            await conn.execute(text("CREATE TABLE reset_probe (id INTEGER PRIMARY KEY)"))
        async with get_engine().connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute("BEGIN")
            await driver.execute("INSERT INTO reset_probe (id) VALUES (1)")
        # Left open, the next BEGIN IMMEDIATE on this connection would fail.
        async with UnitOfWork() as session:
            assert (await session.execute(text("SELECT count(*) FROM reset_probe"))).scalar_one() == 0
    finally:
        await dispose_engine()
        configure(None)


def test_sqlite_pre_ping_only_when_asked(tmp_path: Path) -> None:
    from db_core import get_connector

    default = DatabaseSettings(type="sqlite", name=str(tmp_path / "a.db"), _env_file=None)
    asked = DatabaseSettings(type="sqlite", name=str(tmp_path / "a.db"), pool_pre_ping=True, _env_file=None)
    assert get_connector(default).get_engine_args()["pool_pre_ping"] is False
    assert get_connector(asked).get_engine_args()["pool_pre_ping"] is True
