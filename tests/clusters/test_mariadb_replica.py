"""Read replicas on a real MariaDB primary and replica (GTID replication), started by these tests.

Each server is told apart by its own identity: ``@@server_id``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import db_core.engine
from db_core import READ_ONLY_NOTE, DatabaseSettings, UnitOfWork, configure, dispose_engine
from dbtests.replicas import in_fresh_context
from dbtests.servers import MariaDBServer, run_coroutine

pytestmark = [pytest.mark.cluster, pytest.mark.mysql]

PRIMARY_ID, REPLICA_ID = 1, 2


@dataclass
class Servers:
    primary: MariaDBServer
    replica: MariaDBServer

    def settings(self, **overrides: Any) -> DatabaseSettings:
        values: dict[str, Any] = {
            "name": "app",
            "replica_urls": f"mysql://{self.replica.host}:{self.replica.port}",
            "replica_check_interval_seconds": 0.2,
            **overrides,
        }
        return self.primary.settings(**values)

    async def replicated(self) -> None:
        """Wait until the replica has applied everything the primary has written so far."""
        position = (await self.primary.admin("SELECT @@gtid_binlog_pos"))[0][0]
        rows = await self.replica.admin(f"SELECT MASTER_GTID_WAIT('{position}', 10)")
        assert rows[0][0] == 0, "the replica did not catch up"


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    primary = MariaDBServer(options=["--server-id=1", "--log-bin=mariadb-bin", "--binlog-format=ROW"])
    replica: MariaDBServer | None = None
    try:
        primary.start()
        replica = MariaDBServer(options=["--server-id=2"], admin_password=primary.admin_password)
        replica.start()
        run_coroutine(
            replica.admin(
                f"CHANGE MASTER TO MASTER_HOST='{primary.host}', MASTER_PORT={primary.port}, "
                f"MASTER_USER='{primary.admin_user}', MASTER_PASSWORD='{primary.admin_password}', "
                "MASTER_USE_GTID=slave_pos",
                "START SLAVE",
            )
        )
        run_coroutine(
            primary.admin("CREATE DATABASE app", "CREATE TABLE app.item (id INT AUTO_INCREMENT PRIMARY KEY, name TEXT)")
        )
        servers = Servers(primary, replica)
        run_coroutine(servers.replicated())
        yield servers
    finally:
        if replica is not None:
            replica.remove()
        primary.remove()


@pytest.fixture
async def configured(servers: Servers) -> AsyncIterator[Servers]:
    yield servers
    await dispose_engine()
    configure(None)


async def server_id(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT @@server_id")) or 0)


async def read_unit() -> int:
    """A read-only unit of three statements; the server's id, after checking they all ran on one."""
    async with UnitOfWork(read_only=True) as session:
        first = await server_id(session)
        await session.execute(text("SELECT count(*) FROM item"))
        assert await server_id(session) == first, "one unit of work ran on two servers"
        return first


async def test_reads_go_to_the_replica_and_writes_to_the_primary(configured: Servers) -> None:
    configure(configured.settings())
    assert Counter([await read_unit() for _ in range(300)]) == Counter({REPLICA_ID: 300})
    for number in range(20):
        async with UnitOfWork() as session:
            assert await server_id(session) == PRIMARY_ID
            await session.execute(text("INSERT INTO item (name) VALUES (:name)"), {"name": f"row-{number}"})
            assert await server_id(session) == PRIMARY_ID


async def test_a_write_in_a_read_only_unit_fails_on_the_replica_and_on_the_primary(configured: Servers) -> None:
    configure(configured.settings())
    with pytest.raises(sa_exc.DBAPIError, match="READ ONLY transaction") as on_replica:
        async with UnitOfWork(read_only=True) as session:
            assert await server_id(session) == REPLICA_ID
            await session.execute(text("INSERT INTO item (name) VALUES ('refused')"))
    assert READ_ONLY_NOTE in getattr(on_replica.value, "__notes__", [])

    async with UnitOfWork() as session:  # just written: the next read-only unit is on the primary
        await session.execute(text("SELECT 1"))
    with pytest.raises(sa_exc.DBAPIError, match="READ ONLY transaction") as on_primary:
        async with UnitOfWork(read_only=True) as session:
            assert await server_id(session) == PRIMARY_ID
            await session.execute(text("INSERT INTO item (name) VALUES ('refused')"))
    assert READ_ONLY_NOTE in getattr(on_primary.value, "__notes__", [])
    # The transaction after a read-only one on the same pooled connection is read-write again.
    async with UnitOfWork() as session:
        await session.execute(text("INSERT INTO item (name) VALUES ('allowed')"))
    assert (await configured.primary.admin("SELECT count(*) FROM app.item WHERE name = 'refused'"))[0][0] == 0


async def test_read_your_writes_and_a_stopped_replica_leaves_the_rotation(configured: Servers) -> None:
    configure(configured.settings(read_your_writes_seconds=30))
    await configured.replica.admin("STOP SLAVE SQL_THREAD")
    try:
        async with UnitOfWork() as session:
            await session.execute(text("INSERT INTO item (name) VALUES ('mine')"))
        async with UnitOfWork(read_only=True) as session:  # the writer reads its row, from the primary
            assert await server_id(session) == PRIMARY_ID
            assert await session.scalar(text("SELECT count(*) FROM item WHERE name = 'mine'")) == 1
        # The replica applies nothing: out of the rotation once checked; other tasks read the primary.
        await asyncio.sleep(0.6)
        assert {await in_fresh_context(read_unit()) for _ in range(10)} == {PRIMARY_ID}
        state = db_core.engine._databases["default"].replica_set
        assert state is not None
        assert "replication is not running" in state.states()[0]
    finally:
        await configured.replica.admin("START SLAVE SQL_THREAD")
    await configured.replicated()
    await asyncio.sleep(0.6)
    assert {await in_fresh_context(read_unit()) for _ in range(10)} == {REPLICA_ID}


async def test_a_sql_error_on_the_replica_is_not_hidden_by_a_fallback(configured: Servers) -> None:
    configure(configured.settings())
    with pytest.raises(sa_exc.ProgrammingError, match="no_such_table"):
        async with UnitOfWork(read_only=True) as session:
            assert await server_id(session) == REPLICA_ID
            await session.execute(text("SELECT * FROM no_such_table"))
    state = db_core.engine._databases["default"].replica_set
    assert state is not None
    assert state.replicas[0].usable
