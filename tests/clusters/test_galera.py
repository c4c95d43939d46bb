"""A two-node MariaDB Galera cluster (Debian's galera-4), started by these tests.

Two transactions update the same row, one on each node. Galera lets both
run and certifies them at COMMIT: the second to commit fails there with
error 1213, though it did nothing wrong. ``run_transaction`` runs it again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from db_core import configure, dispose_engine, run_transaction
from db_core.testing import free_port, unavailable
from dbtests.servers import MariaDBServer, run_coroutine

pytestmark = [pytest.mark.cluster, pytest.mark.mysql]

PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")


def galera_options(listen: int, cluster: str, *, bootstrap: bool = False) -> list[str]:
    """``mariadbd`` options of one node on loopback; every port is a free one of its own."""
    provider = f"gmcast.listen_addr=tcp://127.0.0.1:{listen};ist.recv_addr=127.0.0.1:{free_port()};gcache.size=16M"
    options = [
        "--wsrep-on=ON",
        f"--wsrep-provider={PROVIDER}",
        f"--wsrep-cluster-address={cluster}",
        "--wsrep-cluster-name=db_test",
        f"--wsrep-node-address=127.0.0.1:{listen}",
        f"--wsrep-provider-options={provider}",
        f"--wsrep-sst-receive-address=127.0.0.1:{free_port()}",
        "--wsrep-sst-method=rsync",
        "--binlog-format=ROW",
        "--innodb-autoinc-lock-mode=2",
    ]
    return [*options, "--wsrep-new-cluster"] if bootstrap else options


async def has_counter_row(node: MariaDBServer) -> bool:
    """Whether ``node`` has applied the fixture's last statement (the table may not even exist yet)."""
    tables = await node.admin("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app'")
    return tables[0][0] == 2 and bool(await node.admin("SELECT 1 FROM app.counter WHERE id = 1"))


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[MariaDBServer, MariaDBServer]]:
    if not PROVIDER.exists():
        unavailable(f"no Galera provider at {PROVIDER} (apt-get install galera-4)")
    first_port = free_port()
    first = MariaDBServer(options=galera_options(first_port, "gcomm://", bootstrap=True))
    second: MariaDBServer | None = None
    try:
        first.start()
        second = MariaDBServer(
            options=galera_options(free_port(), f"gcomm://127.0.0.1:{first_port}"), admin_password=first.admin_password
        )
        second.start()
        deadline = time.monotonic() + 60
        while run_coroutine(second.admin("SHOW STATUS LIKE 'wsrep_local_state_comment'"))[0][1] != "Synced":
            assert time.monotonic() < deadline, "the second node did not sync"
            time.sleep(0.2)
        assert run_coroutine(first.admin("SHOW STATUS LIKE 'wsrep_cluster_size'"))[0][1] == "2"
        run_coroutine(
            first.admin(
                "CREATE DATABASE app",
                "CREATE TABLE app.counter (id INT PRIMARY KEY, value INT)",
                "CREATE TABLE app.event (id CHAR(32) PRIMARY KEY, who VARCHAR(10))",
                "INSERT INTO app.counter VALUES (1, 0)",
            )
        )
        # Galera applies the first node's writes on the second one asynchronously: wait for them.
        deadline = time.monotonic() + 30
        while not run_coroutine(has_counter_row(second)):
            assert time.monotonic() < deadline, "the second node did not apply the schema"
            time.sleep(0.1)
        yield first, second
    finally:
        if second is not None:
            second.remove()
        first.remove()


@pytest.fixture
async def cluster(nodes: tuple[MariaDBServer, MariaDBServer]) -> AsyncIterator[tuple[MariaDBServer, MariaDBServer]]:
    first, second = nodes
    # The default database is the first node; the named database "second" is the other node.
    other = f"mysql://{second.admin_user}:{second.admin_password}@{second.host}:{second.port}/app"
    configure(first.settings(name="app", databases={"second": {"url": other}}))
    yield nodes
    await dispose_engine()
    configure(None)


async def test_a_certification_conflict_at_commit_is_run_again(cluster: tuple[MariaDBServer, MariaDBServer]) -> None:
    both_updated = asyncio.Barrier(2)
    attempts: dict[str, int] = {"first": 0, "second": 0}

    def increment(who: str) -> Callable[[AsyncSession], Awaitable[None]]:
        event_id = uuid.uuid4().hex

        async def work(session: AsyncSession) -> None:
            attempts[who] += 1
            await session.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))
            await session.execute(text("INSERT INTO event VALUES (:id, :who)"), {"id": event_id, "who": who})
            if attempts[who] == 1:
                await both_updated.wait()  # both hold the row, each on its own node, before either commits

        return work

    await asyncio.gather(
        run_transaction(increment("first")),
        run_transaction(increment("second"), database="second"),
    )
    assert sorted(attempts.values()) == [1, 2], attempts
    # No increment lost, none doubled, on either node.
    for node in cluster:
        assert (await node.admin("SELECT value FROM app.counter WHERE id = 1"))[0][0] == 2
        assert sorted(row[0] for row in await node.admin("SELECT who FROM app.event")) == ["first", "second"]
