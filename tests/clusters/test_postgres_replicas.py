"""Read replicas on a real PostgreSQL primary with two streaming standbys, started by these tests.

Each server is told apart by its own identity: ``inet_server_port()`` (all
three listen on 127.0.0.1) and ``pg_is_in_recovery()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import db_core.engine
from db_core import (
    READ_ONLY_NOTE,
    DatabaseSettings,
    NoReplicaAvailableError,
    UnitOfWork,
    configure,
    dispose_engine,
    get_engine,
    run_transaction,
)
from db_fastapi import ReadOnlyTransactionDep, TransactionDep, db_lifespan
from dbtests.replicas import in_fresh_context
from dbtests.servers import PostgresCluster, run_coroutine

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

IDENTITY = text("SELECT inet_server_port(), pg_is_in_recovery()")


@dataclass
class Servers:
    primary: PostgresCluster
    standbys: list[PostgresCluster]

    def settings(self, **overrides: Any) -> DatabaseSettings:
        urls = ",".join(f"postgresql://{s.host}:{s.port}" for s in self.standbys)
        values: dict[str, Any] = {
            "replica_urls": urls,
            "replica_check_interval_seconds": 0.2,
            "connect_timeout_seconds": 2,
            **overrides,
        }
        return self.primary.settings(**values)

    @property
    def standby_ports(self) -> set[int]:
        return {s.port for s in self.standbys}


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    primary = PostgresCluster()
    started: list[PostgresCluster] = []
    try:
        primary.start()
        started.append(primary)
        standbys = []
        for _ in range(2):
            standby = PostgresCluster(standby_of=primary)
            standby.start()
            started.append(standby)
            standbys.append(standby)
        run_coroutine(primary.admin("CREATE TABLE item (id serial PRIMARY KEY, name text UNIQUE)"))
        for standby in standbys:  # replayed everywhere before the first read
            run_coroutine(wait_for(standby, "SELECT to_regclass('item') IS NOT NULL", "the table"))
        yield Servers(primary, standbys)
    finally:
        for cluster in reversed(started):
            cluster.remove()


@pytest.fixture
async def configured(servers: Servers) -> AsyncIterator[Servers]:
    """Settings for the cluster are configured by each test itself; disposed and forgotten afterwards."""
    for standby in servers.standbys:
        if not standby.running:
            standby.start()
        await standby.admin("SELECT pg_wal_replay_resume()")
    yield servers
    await dispose_engine()
    configure(None)


async def identity(session: AsyncSession) -> tuple[int, bool]:
    port, in_recovery = (await session.execute(IDENTITY)).one()
    return int(port), bool(in_recovery)


async def read_work(session: AsyncSession) -> int:
    """Three statements; the server's port, after checking they all ran on the same one."""
    first = await identity(session)
    await session.execute(text("SELECT count(*) FROM item"))
    second = await identity(session)
    assert first == second, "one unit of work ran on two servers"
    return first[0]


async def read_unit() -> int:
    """A read-only unit of work of :func:`read_work`."""
    async with UnitOfWork(read_only=True) as session:
        return await read_work(session)


async def wait_for(standby: PostgresCluster, query: str, what: str) -> None:
    """Wait (up to 10 s) until ``query`` returns true on ``standby``."""
    for _ in range(200):
        rows = await standby.admin(query)
        if rows and rows[0][0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"standby {standby.port} did not replay {what}")


async def replicated(servers: Servers, name: str) -> None:
    """Wait until both standbys have replayed the row ``name``."""
    for standby in servers.standbys:
        await replicated_one(standby, name)


async def test_reads_are_spread_over_the_standbys_and_writes_go_to_the_primary(configured: Servers) -> None:
    configure(configured.settings())
    ports = Counter([await read_unit() for _ in range(300)])
    assert set(ports) == configured.standby_ports, ports
    assert min(ports.values()) >= 100, f"reads are not spread over both standbys: {ports}"

    for number in range(20):
        async with UnitOfWork() as session:
            assert await identity(session) == (configured.primary.port, False)
            await session.execute(text("INSERT INTO item (name) VALUES (:name)"), {"name": f"spread-{number}"})
            assert await identity(session) == (configured.primary.port, False)


async def test_a_write_in_a_read_only_unit_fails_on_a_standby_and_on_the_primary(configured: Servers) -> None:
    configure(configured.settings())
    with pytest.raises(sa_exc.DBAPIError, match="read-only transaction") as on_standby:
        async with UnitOfWork(read_only=True) as session:
            assert (await identity(session))[0] in configured.standby_ports
            await session.execute(text("INSERT INTO item (name) VALUES ('refused-on-standby')"))
    assert READ_ONLY_NOTE in getattr(on_standby.value, "__notes__", [])

    # Just after a write, the task reads from the primary: still read-only there.
    async with UnitOfWork() as session:
        await session.execute(text("SELECT 1"))
    with pytest.raises(sa_exc.DBAPIError, match="read-only transaction") as on_primary:
        async with UnitOfWork(read_only=True) as session:
            assert await identity(session) == (configured.primary.port, False)
            await session.execute(text("INSERT INTO item (name) VALUES ('refused-on-primary')"))
    assert READ_ONLY_NOTE in getattr(on_primary.value, "__notes__", [])
    rows = await configured.primary.admin("SELECT count(*) FROM item WHERE name LIKE 'refused%'")
    assert rows[0][0] == 0


async def test_read_your_writes_and_a_lagging_standby_leaves_the_rotation(configured: Servers) -> None:
    configure(configured.settings(replica_max_lag_seconds=1, read_your_writes_seconds=30))
    paused, current = configured.standbys
    for standby in configured.standbys:
        await standby.admin("SELECT pg_wal_replay_pause()")
    try:
        async with UnitOfWork() as session:
            await session.execute(text("INSERT INTO item (name) VALUES ('mine')"))
        # The task that wrote reads its row, from the primary...
        async with UnitOfWork(read_only=True) as session:
            assert await identity(session) == (configured.primary.port, False)
            assert await session.scalar(text("SELECT count(*) FROM item WHERE name = 'mine'")) == 1

        # ...while other tasks read from the standbys, which have not replayed it yet.
        async def elsewhere() -> tuple[int, int]:
            async with UnitOfWork(read_only=True) as session:
                port = (await identity(session))[0]
                return port, int(await session.scalar(text("SELECT count(*) FROM item WHERE name = 'mine'")) or 0)

        seen = [await in_fresh_context(elsewhere()) for _ in range(4)]
        assert {port for port, _ in seen} == configured.standby_ports
        assert all(count == 0 for _, count in seen)
        await current.admin("SELECT pg_wal_replay_resume()")
        await replicated_one(current, "mine")

        # Beyond DB_REPLICA_MAX_LAG_SECONDS the paused standby leaves the rotation...
        await asyncio.sleep(1.5)
        ports = Counter([await in_fresh_context(read_unit()) for _ in range(20)])
        assert ports == Counter({current.port: 20}), ports
    finally:
        await paused.admin("SELECT pg_wal_replay_resume()")
    # ...and comes back once it has caught up.
    await replicated(configured, "mine")
    await asyncio.sleep(0.6)
    ports = Counter([await in_fresh_context(read_unit()) for _ in range(20)])
    assert set(ports) == configured.standby_ports, ports


async def replicated_one(standby: PostgresCluster, name: str) -> None:
    await wait_for(standby, f"SELECT count(*) > 0 FROM item WHERE name = '{name}'", repr(name))


class SilentServer:
    """Accepts connections on a port and never answers: a host that is there but does not respond."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(100)
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the port listening.
        self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self.sock.close()
        for connection in self.accepted:
            connection.close()


async def test_a_standby_killed_under_load_fails_no_read(configured: Servers, caplog: pytest.LogCaptureFixture) -> None:
    """20 clients read while a standby dies and its address stops answering: no read fails.

    A unit whose replica dies before its first statement moves to another by
    itself; one that had already run a statement there is run again by
    ``run_transaction``. Only the units that reached the dead standby before
    it was found out wait for the connect timeout; after that, none does.
    """
    connect_timeout = 2.0
    configure(configured.settings(connect_timeout_seconds=connect_timeout))
    victim = configured.standbys[0]
    failures: list[BaseException] = []
    units: list[tuple[float, float, int]] = []  # start, duration, port
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                port = await run_transaction(read_work, read_only=True)
            except Exception as exc:  # a failed read unit is what this test is about
                failures.append(exc)
                continue
            units.append((started, time.monotonic() - started, port))

    caplog.set_level(logging.WARNING, logger="db_core")
    clients = [asyncio.create_task(in_fresh_context(client())) for _ in range(20)]
    silent: SilentServer | None = None
    try:
        await asyncio.sleep(1)
        victim.stop("immediate")
        silent = SilentServer(victim.port)
        killed = time.monotonic()
        await asyncio.sleep(connect_timeout + 2)
    finally:
        stop.set()
        await asyncio.gather(*clients)
        if silent is not None:
            silent.close()
    assert failures == []
    left = [r for r in caplog.records if "left the rotation" in r.getMessage() and str(victim.port) in r.getMessage()]
    assert left, "the dead standby was never taken out of the rotation"
    detected = left[0].created - time.time() + time.monotonic()  # the log's wall clock on the monotonic one
    after = [(start, duration, port) for start, duration, port in units if start > detected + 0.05]
    assert after, "no read completed after the standby was found dead"
    assert all(port != victim.port for _, _, port in after)
    slowest = max(duration for _, duration, _ in after)
    assert slowest < connect_timeout / 2, f"a read after detection took {slowest:.2f} s"
    assert killed < detected + connect_timeout + 1
    assert sum(1 for start, _, _ in units if start > killed) > 100


async def test_with_every_standby_down_the_fallback_policy_holds(configured: Servers) -> None:
    for standby in configured.standbys:
        standby.stop("immediate")
    configure(configured.settings(replica_fallback="primary"))
    ports = {await in_fresh_context(read_unit()) for _ in range(5)}
    assert ports == {configured.primary.port}
    await dispose_engine()

    configure(configured.settings(replica_fallback="error"))
    with pytest.raises(NoReplicaAvailableError) as refused:
        for _ in range(5):  # the first units find the standbys down; then none is tried
            await in_fresh_context(read_unit())
    message = str(refused.value)
    assert all(str(standby.port) in message for standby in configured.standbys)
    assert "DB_REPLICA_FALLBACK" in message
    assert configured.primary.admin_password not in message


async def test_a_sql_error_on_a_standby_is_not_hidden_by_a_fallback(configured: Servers) -> None:
    configure(configured.settings())
    for _ in range(4):  # on each standby in turn
        with pytest.raises(sa_exc.ProgrammingError, match="no_such_table"):
            async with UnitOfWork(read_only=True) as session:
                assert (await identity(session))[0] in configured.standby_ports
                await session.execute(text("SELECT * FROM no_such_table"))
    router = db_core.engine._databases["default"].replica_set
    assert router is not None
    assert all(replica.usable for replica in router.replicas), router.states()


async def test_single_server_settings_make_no_replica_engines(configured: Servers) -> None:
    configure(configured.primary.settings())
    async with UnitOfWork(read_only=True) as session:
        assert await identity(session) == (configured.primary.port, False)
    entry = next(iter(db_core.engine._databases["default"].engines.values()))
    assert entry.router is None
    assert entry.engines() == [get_engine()]


async def test_fastapi_read_only_dependency_reads_from_a_standby(configured: Servers) -> None:
    app = FastAPI(lifespan=db_lifespan())

    @app.get("/read")
    async def read(session: ReadOnlyTransactionDep) -> list[Any]:
        return list(await identity(session))

    @app.post("/write")
    async def write(session: TransactionDep) -> list[Any]:
        await session.execute(text("INSERT INTO item (name) VALUES ('from-api')"))
        return list(await identity(session))

    configure(configured.settings())
    with TestClient(app) as client:
        reads = [tuple(client.get("/read").json()) for _ in range(10)]
        assert {port for port, _ in reads} == configured.standby_ports
        assert all(in_recovery for _, in_recovery in reads)
        assert client.post("/write").json() == [configured.primary.port, False]


def db_check(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m db_core check ARGS`` with only ``env`` as its ``DB_*`` variables."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("DB_", "WEB_CONCURRENCY"))}
    return subprocess.run(
        [sys.executable, "-m", "db_core", "check", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_check_reports_every_server_and_its_role(servers: Servers, tmp_path: Path) -> None:
    primary = servers.primary
    env = {
        "DB_URL": f"postgresql://postgres:{primary.admin_password}@{primary.host}:{primary.port}/postgres",
        "DB_REPLICA_URLS": ",".join(f"postgresql://{s.host}:{s.port}" for s in servers.standbys),
        "DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    result = db_check(env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    blocks = [dict(re.findall(r"^([a-z ]+):\s+(.*)$", block, re.M)) for block in result.stdout.split("\n\n")]
    assert [b["role"] for b in blocks] == ["primary", "replica 1", "replica 2"]
    assert [b["url"].rsplit(":", 1)[1] for b in blocks] == [f"{s.port}/postgres" for s in [primary, *servers.standbys]]
    assert "lag" not in blocks[0]
    assert all(re.fullmatch(r"\d+\.\d s \(DB_REPLICA_MAX_LAG_SECONDS=10\)", b["lag"]) for b in blocks[1:])
    assert blocks[0]["connections"].startswith("up to 30 (1 worker(s) x (DB_POOL_SIZE + DB_MAX_OVERFLOW)) of")
    assert blocks[1]["connections"].startswith("up to 31 (1 worker(s) x (DB_POOL_SIZE + DB_MAX_OVERFLOW + 1 health")
    assert primary.admin_password not in result.stdout + result.stderr

    # 4 workers x 31 connections is more than the standbys' 97: a warning each, still a success.
    result = db_check({**env, "WEB_CONCURRENCY": "4"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3, result.stderr
    assert "default replica 1: 4 worker(s) may open 124 connections" in warnings[1]
    assert "max_connections (97)" in warnings[1]

    servers.standbys[1].stop("immediate")
    try:
        result = db_check(env, "--workers", "1", cwd=tmp_path)
    finally:
        servers.standbys[1].start()
    assert result.returncode == 1
    assert result.stderr.count("db check: cannot connect to") == 1
    assert str(servers.standbys[1].port) in result.stderr
    assert result.stdout.count("round trip:") == 2
