"""The leak check itself: it catches a connection left checked out, and one idle in transaction."""

from __future__ import annotations

from sqlalchemy import text

from db_core import DatabaseSettings, dispose_engine, get_engine
from dbtests.leaks import leaks, tracking


async def test_leak_check_sees_a_connection_left_open(db: DatabaseSettings) -> None:
    if db.type == "mysql":
        async with get_engine().begin() as setup:
            await setup.execute(text("CREATE TABLE IF NOT EXISTS leak_probe (id INT) ENGINE=InnoDB"))
    with tracking() as usage:
        conn = await get_engine().connect()
        # A read inside a transaction: InnoDB lists it among open transactions, PostgreSQL as idle in one.
        await conn.execute(text("SELECT * FROM leak_probe" if db.type == "mysql" else "SELECT 1"))
        found = leaks(usage)
        await conn.close()
        assert any("checked out" in line for line in found), found
        if db.type != "sqlite":
            assert any("idle in transaction" in line for line in found), found
        assert not leaks(usage)
    if db.type == "mysql":
        async with get_engine().begin() as setup:
            await setup.execute(text("DROP TABLE leak_probe"))


async def test_leak_check_sees_a_connection_out_when_its_engine_was_disposed(db: DatabaseSettings) -> None:
    # Disposing resets the pool's own count (checkedout() is 0 again), which alone would hide the leak.
    with tracking() as usage:
        conn = await get_engine().connect()
        await conn.execute(text("SELECT 1"))
        await dispose_engine()
        found = leaks(usage)
        # Its pool is gone: invalidating closes the driver's connection, where close() would leave
        # it to the garbage collector.
        await conn.invalidate()
        await conn.close()
        assert any("never checked in" in line for line in found), found
        assert not leaks(usage)
