"""pool_stats(), health() and db_fastapi's readiness and liveness routes, on real servers and real HTTP.

- ``pool_stats()`` is checked against the pool's own ``status()`` after every
  step of a scripted sequence: checkouts up to the size, an overflow, a task
  waiting and timing out, a pooled connection killed on the server (or
  invalidated, on SQLite) and replaced.
- The readiness route answers 200 when the database is up, and 503 within
  ``DB_HEALTH_TIMEOUT_SECONDS`` + 0.5 s when a throwaway server is stopped and
  when the pool is exhausted; the liveness route answers 200 in every case
  without a checkout. No answer holds a URL, the password or a traceback.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from db_core import (
    POOL_STATS_KEYS,
    DatabaseSettings,
    PoolExhaustedError,
    configure,
    dispose_engine,
    get_connector_instance,
    get_engine,
    health,
    pool_stats,
)
from db_core.pool import QueuePool
from db_fastapi import db_lifespan, health_router
from dbtests.http import running_uvicorn
from dbtests.queries import OWN_ID
from dbtests.secrets import PASSWORD, Login, assert_no_secret, sql_string, user_name
from dbtests.servers import MariaDBServer, PostgresCluster, kill, mariadb, postgres_cluster

pytest_plugins = ["dbtests.secrets"]

HEALTH_TIMEOUT = 0.5
SLACK = 0.5  # what the readiness route may take beyond DB_HEALTH_TIMEOUT_SECONDS
LIVE_SECONDS = 0.25  # a liveness answer is this fast, or it waited on something


# --- pool_stats() against the pool's own view -----------------------------------------------------

_STATUS = re.compile(
    r"Pool size: (-?\d+)\s+Connections in pool: (-?\d+) Current Overflow: (-?\d+) "
    r"Current Checked out connections: (-?\d+)"
)


def agrees(pool: QueuePool, **expected: int) -> dict[str, Any]:
    """``pool_stats()``, checked against ``pool.status()`` and the ``expected`` values."""
    stats = pool_stats()
    assert tuple(stats) == POOL_STATS_KEYS
    match = _STATUS.fullmatch(pool.status())
    assert match, pool.status()
    size, idle, overflow, checked_out = (int(group) for group in match.groups())
    assert (stats["size"], stats["idle"], stats["overflow"], stats["checked_out"]) == (
        size,
        idle,
        max(overflow, 0),
        checked_out,
    ), (stats, pool.status())
    assert (stats["checked_out"], stats["overflow"]) == (pool.checkedout(), max(pool.overflow(), 0))
    assert {key: stats[key] for key in expected} == expected, (stats, pool.status())
    return stats


async def test_pool_stats_follow_the_pool_through_a_scripted_sequence(
    settings: DatabaseSettings, request: pytest.FixtureRequest
) -> None:
    configure(
        settings.model_copy(
            update={"pool_size": 2, "max_overflow": 1, "pool_timeout_seconds": 0.3, "pool_pre_ping": True}
        )
    )
    held: list[AsyncConnection] = []
    try:
        backend = get_connector_instance().name
        engine = get_engine()
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        agrees(pool, size=2, max=3, checked_out=0, idle=0, overflow=0, waiting=0, connections_created=0)

        ids = []
        for step in range(3):  # up to the size, then one overflow
            connection = await engine.connect()
            held.append(connection)
            if backend != "sqlite":
                ids.append((await connection.execute(text(OWN_ID[backend]))).scalar_one())
            agrees(pool, checked_out=step + 1, overflow=max(step - 1, 0), connections_created=step + 1)
        stats = agrees(pool, checked_out=3, idle=0, overflow=1, checkouts=3, timeouts=0)
        assert stats["acquire_seconds_total"] > 0

        # A fourth task waits (seen as waiting), then times out.
        waiter = asyncio.ensure_future(engine.connect())
        for _ in range(100):
            if pool_stats()["waiting"]:
                break
            await asyncio.sleep(0.005)
        agrees(pool, waiting=1, timeouts=0)
        with pytest.raises(PoolExhaustedError):
            await waiter
        agrees(pool, waiting=0, timeouts=1, checked_out=3, checkouts=3)

        # Everything back: the overflow connection is closed (the pool holds two), the others idle.
        for connection in held:
            await connection.close()
        held.clear()
        agrees(pool, checked_out=0, idle=2, overflow=0, invalidations=0, connections_created=3)

        # One pooled connection dies: killed on the server, or invalidated on SQLite (no server to kill it).
        if backend == "sqlite":
            connection = await engine.connect()
            await connection.invalidate()
            await connection.close()
        else:
            await kill(request.getfixturevalue(f"{backend}_server"), ids[0])
        # Two checkouts take both pooled connections: the dead one is found and replaced.
        for _ in range(2):
            connection = await engine.connect()
            held.append(connection)
            if backend == "sqlite":
                continue  # a second SQLite connection's statement would wait for the first one's lock
            try:
                await connection.execute(text("SELECT 1"))
            except DBAPIError as exc:  # died unnoticed by the pre-ping: its first statement invalidates it
                failure: DBAPIError | None = exc
            else:
                failure = None
            assert failure is None or failure.connection_invalidated, failure
        agrees(pool, invalidations=1, connections_created=4, timeouts=1)
        for connection in held:
            await connection.close()
        held.clear()
        agrees(pool, checked_out=0, idle=2, overflow=0, invalidations=1, connections_created=4, waiting=0)
    finally:
        for connection in held:
            await connection.close()
        await dispose_engine()
        configure(None)


async def test_pool_stats_add_up_every_loops_engine(db: DatabaseSettings) -> None:
    """Another event loop's engine (another thread) is counted too: per-process totals."""
    async with get_engine().connect() as connection:
        await connection.execute(text("SELECT 1"))

    failures: list[BaseException] = []

    def other_loop() -> None:
        async def work() -> None:
            async with get_engine().connect() as connection:
                await connection.execute(text("SELECT 1"))
                # Both loops' pools, while this one holds a connection.
                stats = pool_stats()
                assert stats["checked_out"] == 1
                assert stats["connections_created"] == 2
                assert stats["size"] == 2 * get_connector_instance().pool_size

        try:
            asyncio.run(work())
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    thread.join(30)
    assert not failures, failures
    # That loop closed, and its engine with it: only this loop's remains.
    assert pool_stats()["connections_created"] == 1


# --- health() -------------------------------------------------------------------------------------


async def test_health_when_up(db: DatabaseSettings) -> None:
    result = await health()
    assert result.ok, result
    assert result.error is None
    assert result.backend == get_connector_instance().name
    assert result.round_trip_seconds is not None
    assert result.round_trip_seconds > 0
    assert result.pool["checked_out"] == 0
    assert result.pool["checkouts"] == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (in the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_health_answers_in_time_when_the_server_is_silent(backend: str, silent_port: int) -> None:
    configure(
        DatabaseSettings(
            type=backend,
            host="127.0.0.1",
            port=silent_port,
            password=PASSWORD,
            connect_timeout_seconds=10,
            health_timeout_seconds=HEALTH_TIMEOUT,
            pool_size=1,  # the check's own connection attempt fills the pool: still "did not answer"
            max_overflow=0,
            _env_file=None,
        )
    )
    try:
        started = time.monotonic()
        result = await health()
        elapsed = time.monotonic() - started
    finally:
        await dispose_engine()
        configure(None)
    assert elapsed < HEALTH_TIMEOUT + SLACK, f"health() took {elapsed:.2f}s on a silent server"
    assert not result.ok
    assert result.error == f"the database did not answer within {HEALTH_TIMEOUT:g} s"
    assert_no_secret(repr(result), "health() on a silent server")


# --- the readiness and liveness routes over real HTTP ---------------------------------------------


def health_app() -> FastAPI:
    """The health routes, and ``GET /hold/{seconds}``, which keeps a pooled connection that long."""
    app = FastAPI(lifespan=db_lifespan())
    app.include_router(health_router())

    @app.get("/hold/{seconds}")
    async def hold(seconds: float) -> dict[str, str]:
        async with get_engine().connect() as connection:
            await connection.execute(text("SELECT 1"))
            await asyncio.sleep(seconds)
        return {"held": "done"}

    return app


def get(client: httpx2.Client, path: str) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def assert_clean(response: httpx2.Response, where: str) -> None:
    """No secret, URL or traceback in the answer, and never cached."""
    assert_no_secret(response.text, where)
    for leak in ("://", "Traceback", 'File "'):
        assert leak not in response.text, f"{where}: {leak!r} in {response.text}"
    assert response.headers["cache-control"] == "no-store"


def assert_ready(client: httpx2.Client) -> None:
    response, _ = get(client, "/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["round_trip_ms"] > 0
    assert set(body["pool"]) == set(POOL_STATS_KEYS)
    assert_clean(response, "readiness, up")


def assert_unready_in_time(client: httpx2.Client, reason: str, where: str) -> dict[str, Any]:
    response, elapsed = get(client, "/health/ready")
    assert response.status_code == 503, response.text
    assert elapsed < HEALTH_TIMEOUT + SLACK, f"{where}: readiness took {elapsed:.2f}s"
    body: dict[str, Any] = response.json()
    assert body["status"] == "unavailable"
    assert re.search(reason, body["reason"]), body
    assert "\n" not in body["reason"]
    assert_clean(response, f"readiness, {where}")
    return body


def assert_alive_without_the_database(client: httpx2.Client, where: str) -> None:
    before = pool_stats()
    response, elapsed = get(client, "/health/live")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})
    assert elapsed < LIVE_SECONDS, f"{where}: liveness took {elapsed:.2f}s"
    after = pool_stats()
    for key in ("checkouts", "connections_created", "checked_out"):
        assert after[key] == before[key], f"{where}: liveness changed {key}: {before} -> {after}"
    assert_clean(response, f"liveness, {where}")


@asynccontextmanager
async def serving(settings: DatabaseSettings) -> AsyncIterator[httpx2.Client]:
    configure(settings)
    try:
        with running_uvicorn(health_app()) as base_url, httpx2.Client(base_url=base_url, timeout=20) as client:
            yield client
    finally:
        await dispose_engine()
        configure(None)


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def health_settings(request: pytest.FixtureRequest, tmp_path: Any) -> DatabaseSettings:
    """Each backend, logged in with the password where there is a server, one pooled connection."""
    overrides: dict[str, Any] = {
        "pool_size": 1,
        "max_overflow": 0,
        "health_timeout_seconds": HEALTH_TIMEOUT,
        "pool_timeout_seconds": 30,
    }
    if request.param == "sqlite":
        return DatabaseSettings(type="sqlite", name=str(tmp_path / "health.db"), _env_file=None, **overrides)
    login: Login = request.getfixturevalue(f"{request.param}_login")
    return login.settings(**overrides)


async def test_ready_when_up_and_unready_in_time_when_the_pool_is_exhausted(
    health_settings: DatabaseSettings,
) -> None:
    async with serving(health_settings) as client:
        assert_ready(client)
        assert_alive_without_the_database(client, "up")
        # Another request holds the only connection for longer than the health check may wait.
        holder = threading.Thread(target=lambda: client.get("/hold/1.5"))
        holder.start()
        try:
            deadline = time.monotonic() + 10
            while pool_stats()["checked_out"] < 1:
                assert time.monotonic() < deadline, pool_stats()
                await asyncio.sleep(0.01)
            body = assert_unready_in_time(client, r"^no free connection within 0\.5 s", "pool exhausted")
            assert body["pool"]["checked_out"] == body["pool"]["max"] == 1
            assert_alive_without_the_database(client, "pool exhausted")
        finally:
            holder.join(20)
        assert_ready(client)
        assert pool_stats()["timeouts"] == 0  # the health check gave up; no request timed out


async def cluster_login(cluster: PostgresCluster) -> DatabaseSettings:
    name = user_name()
    await cluster.admin(f"CREATE ROLE {name} LOGIN PASSWORD {sql_string(PASSWORD)}")
    return cluster.settings(user=name, password=PASSWORD)


async def mariadb_login(server: MariaDBServer) -> DatabaseSettings:
    name = user_name()
    account = f"'{name}'@'%'"
    await server.admin(
        "SET NAMES utf8mb4",
        f"CREATE USER {account} IDENTIFIED BY {sql_string(PASSWORD)}",
        f"GRANT ALL PRIVILEGES ON mysql.* TO {account}",
    )
    return server.settings(user=name, password=PASSWORD)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_unready_in_time_when_the_server_is_stopped(backend: str) -> None:
    overrides = {"pool_size": 1, "max_overflow": 0, "health_timeout_seconds": HEALTH_TIMEOUT}
    if backend == "postgres":
        with postgres_cluster() as cluster:
            settings = (await cluster_login(cluster)).model_copy(update=overrides)
            async with serving(settings) as client:
                assert_ready(client)
                cluster.stop()
                assert_unready_in_time(client, r"\S", "server stopped")
                assert_alive_without_the_database(client, "server stopped")
                cluster.start()
                assert_ready(client)
    else:
        with mariadb() as server:
            settings = (await mariadb_login(server)).model_copy(update=overrides)
            async with serving(settings) as client:
                assert_ready(client)
                server.remove()
                assert_unready_in_time(client, r"\S", "server stopped")
                assert_alive_without_the_database(client, "server stopped")
