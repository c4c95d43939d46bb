"""The leak check itself: it catches a connection left checked out, and one idle in transaction."""

from __future__ import annotations

from sqlalchemy import text

from db_core import DatabaseSettings, get_engine
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
