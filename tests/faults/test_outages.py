"""Outages: the server stops and comes back, never answers, kills a session, or closes idle connections.

Issue 3: during an outage requests fail fast (within DB_CONNECT_TIMEOUT_SECONDS)
with a clear error, and afterwards every request succeeds on the same engine,
without restarting the application; no acknowledged commit is lost. A server
that accepts TCP and never answers costs at most the connect timeout. A
session the server kills mid-transaction surfaces as a disconnect-type error
(``connection_invalidated``) and leaves the pool healthy (sqlalchemy#13241).
MariaDB's ``wait_timeout`` closing idle pooled connections is survived by
pre-ping, or by recycling sooner; with neither, one request fails.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import String, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db_core import (
    DatabaseSettings,
    UnitOfWork,
    configure,
    dispose_engine,
    get_connector,
    get_engine,
    ping,
)
from db_core.connector import LOST_CONNECTION_NOTE
from db_core.testing.relay import Relay
from dbtests.leaks import FaultReport
from dbtests.queries import OWN_ID, own_id
from dbtests.servers import Server, kill, postgres_cluster

CONNECT_TIMEOUT = 2.0
# Room for a loaded 2-core runner between the driver giving up and the test reading the clock.
MARGIN = 0.5
CLIENTS = 20
OUTAGE_SECONDS = 2.0
# Words that tell a reader of the error (type and first line) that the database connection failed.
CLEAR = re.compile(
    r"connect|refused|closed|terminat|shutting down|starting up|reset|lost connection|gone away|timeout|timed out",
    re.IGNORECASE,
)


def headline(exc: BaseException) -> str:
    """The exception as the user sees it first: type and the first line of the message."""
    lines = str(exc).splitlines()
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {lines[0] if lines else ''}"


def shown(exc: BaseException) -> str:
    """:func:`headline`, with SQLAlchemy's disconnect flag, and ports masked so that repeats count as one."""
    flag = " [connection_invalidated]" if getattr(exc, "connection_invalidated", False) else ""
    return re.sub(r"\b\d{4,5}\b", "<port>", headline(exc)) + flag


def is_clear(exc: BaseException) -> bool:
    """Whether the error says that the database connection failed.

    In words, or by SQLAlchemy's ``connection_invalidated``: asyncpg sometimes
    reports a connection the server closed mid-statement as "cannot switch to
    state N; another operation (2) is in progress" (InternalClientError),
    which only the flag identifies as a disconnect.
    """
    return bool(CLEAR.search(headline(exc))) or bool(getattr(exc, "connection_invalidated", False))


class OutageBase(DeclarativeBase):
    pass


class Item(OutageBase):
    __tablename__ = "outage_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)


# --- 1. The server stops (or crashes) under load and comes back ---------------------------------


@dataclass
class Request:
    client: int
    started: float
    finished: float
    error: Exception | None = None


@dataclass
class Traffic:
    """What the clients did, and what became of each write."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[Request] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    # COMMIT was sent and no answer came back: the row may or may not be there.
    unknown: set[str] = field(default_factory=set)
    # Failed before COMMIT: the row must not be there.
    failed: set[str] = field(default_factory=set)
    # Acknowledged keys that a later read by the same client did not find.
    unread: list[str] = field(default_factory=list)


async def client(number: int, traffic: Traffic) -> None:
    """A client of the application: a write, then a read of its last acknowledged write, over and over."""
    loop = asyncio.get_running_loop()
    last: str | None = None
    for i in itertools.count():
        if traffic.stop.is_set():
            return
        key = f"c{number}-{i}"
        started, committing = loop.time(), False
        try:
            async with UnitOfWork() as session:
                session.add(Item(key=key))
                await session.flush()
                committing = True
        except Exception as exc:
            (traffic.unknown if committing else traffic.failed).add(key)
            traffic.requests.append(Request(number, started, loop.time(), exc))
        else:
            traffic.acknowledged.add(key)
            last = key
            traffic.requests.append(Request(number, started, loop.time()))
        if last is not None:
            started = loop.time()
            try:
                async with UnitOfWork() as session:
                    found = await session.scalar(select(Item.key).where(Item.key == last))
            except Exception as exc:
                traffic.requests.append(Request(number, started, loop.time(), exc))
            else:
                traffic.requests.append(Request(number, started, loop.time()))
                if found != last:
                    traffic.unread.append(last)
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_outage_fails_fast_and_recovers_without_restarting_the_app(mode: str, fault_report: FaultReport) -> None:
    with postgres_cluster() as cluster:
        configure(cluster.settings(connect_timeout_seconds=CONNECT_TIMEOUT, pool_pre_ping=True))
        try:
            engine = get_engine()
            async with engine.begin() as conn:
                await conn.run_sync(OutageBase.metadata.create_all)
            loop = asyncio.get_running_loop()
            traffic = Traffic()
            clients = [asyncio.create_task(client(n, traffic)) for n in range(CLIENTS)]
            try:
                await asyncio.sleep(0.5)
                down = loop.time()
                # "immediate" is a crash: no shutdown checkpoint, crash recovery on the next start.
                await asyncio.to_thread(cluster.stop, mode)
                await asyncio.sleep(OUTAGE_SECONDS)
                await asyncio.to_thread(cluster.start)
                up = loop.time()
                await asyncio.sleep(1.0)
            finally:
                traffic.stop.set()
                await asyncio.gather(*clients)
            async with UnitOfWork() as session:
                stored = set((await session.scalars(select(Item.key))).all())
            assert get_engine() is engine
        finally:
            await dispose_engine()
            configure(None)

    failures = [r for r in traffic.requests if r.error is not None]
    assert failures, "the outage reached no request"
    before = [r for r in traffic.requests if r.finished < down]
    assert before
    assert all(r.error is None for r in before), [headline(r.error) for r in before if r.error]

    # Fail fast: no request that met the outage, failed or not, waited longer than the connect timeout.
    during = [r for r in traffic.requests if r.finished >= down and r.started <= up]
    slowest = max(r.finished - r.started for r in during)
    assert slowest <= CONNECT_TIMEOUT + MARGIN, f"a request during the outage took {slowest:.2f}s"
    seen = Counter(shown(r.error) for r in failures if r.error)
    unclear = {shown(r.error) for r in failures if r.error and not is_clear(r.error)}
    assert not unclear, unclear

    # No settle window: every request begun after pg_ctl reported the server ready must succeed.
    after = [r for r in traffic.requests if r.started >= up]
    assert {r.client for r in after} == set(range(CLIENTS))
    failed_after = [(round(r.started - up, 2), headline(r.error)) for r in after if r.error]
    assert not failed_after, failed_after

    lost = traffic.acknowledged - stored
    assert not lost, sorted(lost)[:10]
    assert not traffic.unread, traffic.unread[:10]
    assert not (traffic.failed & stored), sorted(traffic.failed & stored)[:10]

    hit = {r.client for r in failures}
    recovered = {c for c in hit if all(r.error is None for r in after if r.client == c)}
    kind = "server stopped and restarted" if mode == "fast" else "server crashed (stop -m immediate) and restarted"
    fault_report.add(kind, "postgres", injected=len(hit), recovered=len(recovered), rows_lost=len(lost))
    last_failing = max(r.started for r in failures) - up
    print(
        f"\n[{mode}] requests={len(traffic.requests)} failed={len(failures)} slowest during the outage={slowest:.3f}s "
        f"last failing request began {last_failing:+.3f}s from ready; acknowledged={len(traffic.acknowledged)} "
        f"unknown outcome={len(traffic.unknown)} (present {len(traffic.unknown & stored)}) lost={len(lost)}"
    )
    for line, count in seen.most_common():
        print(f"  {count:5d} x {line}")


# --- 2. A server that accepts TCP and never answers; a port where nothing listens -----------------


class Proxy(Relay):
    """A TCP front for a real server: absent (not started), silent (accepts and never answers), or forwarding."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.silent = True
        self.hung_up = 0  # silent connections the client closed itself (Relay counts the accepted ones)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            await reader.read()  # nothing is ever sent; returns when the client gives up
            self.hung_up += 1
            return
        await super().serve(reader, writer)


@asynccontextmanager
async def proxy_for(server: Server, *, listening: bool) -> AsyncIterator[Proxy]:
    proxy = Proxy((server.host, server.port))
    if listening:
        await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def first_query() -> None:
    async with UnitOfWork() as session:
        await session.execute(text("SELECT 1"))


async def timed_failure(attempt: Callable[[], Awaitable[Any]]) -> tuple[float, Exception]:
    started = time.perf_counter()
    with pytest.raises(Exception) as info:  # noqa: PT011 - which one is what the test looks at
        await attempt()
    return time.perf_counter() - started, info.value


async def ping_and_first_query_fail(within: float) -> list[tuple[float, Exception]]:
    """:func:`ping`, then a first query: each must fail within ``within`` seconds; (seconds, error) of each."""
    attempts = [await timed_failure(ping), await timed_failure(first_query)]
    for elapsed, exc in attempts:
        assert elapsed <= within + MARGIN, f"{headline(exc)} after {elapsed:.2f}s"
    return attempts


async def ping_and_first_query_on_the_same_engine() -> int:
    """:func:`ping`, then a first query, both working on the engine that failed them: nothing restarted."""
    engine = get_engine()
    recovered = 0
    for attempt in (ping, first_query):
        await attempt()
        recovered += 1
    assert get_engine() is engine
    return recovered


def print_attempts(backend: str, attempts: list[tuple[float, Exception]]) -> None:
    print(f"\n[{backend}] " + "; ".join(f"{headline(exc)!r} after {elapsed:.3f}s" for elapsed, exc in attempts))


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_server_that_never_answers_costs_at_most_the_connect_timeout(
    backend: str, request: pytest.FixtureRequest, fault_report: FaultReport
) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    async with proxy_for(server, listening=True) as proxy:
        configure(server.settings(port=proxy.port, connect_timeout_seconds=1.0))
        try:
            attempts = await ping_and_first_query_fail(within=1.0)
            for _, exc in attempts:
                assert isinstance(exc, TimeoutError), headline(exc)
            # The driver gave up on its socket too: nothing is left half-open.
            await asyncio.sleep(0.1)
            assert proxy.hung_up == proxy.accepted == len(attempts)
            # The server answers again: the same engine connects, nothing restarted.
            proxy.silent = False
            recovered = await ping_and_first_query_on_the_same_engine()
        finally:
            await dispose_engine()
            configure(None)
    fault_report.add("server accepts TCP and never answers", backend, injected=len(attempts), recovered=recovered)
    print_attempts(backend, attempts)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_port_where_nothing_listens_fails_fast_and_clearly(
    backend: str, request: pytest.FixtureRequest, fault_report: FaultReport
) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    async with proxy_for(server, listening=False) as proxy:
        configure(server.settings(port=proxy.port, connect_timeout_seconds=CONNECT_TIMEOUT))
        try:
            attempts = await ping_and_first_query_fail(within=CONNECT_TIMEOUT)
            for _, exc in attempts:
                assert re.search(r"refused|can't connect|connect call failed", headline(exc), re.IGNORECASE), headline(
                    exc
                )
            # The server appears on that port: the same engine connects.
            proxy.silent = False
            await proxy.start()
            recovered = await ping_and_first_query_on_the_same_engine()
        finally:
            await dispose_engine()
            configure(None)
    fault_report.add("nothing listens on the port", backend, injected=len(attempts), recovered=recovered)
    print_attempts(backend, attempts)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_the_connect_timeout_error_names_the_setting(backend: str, request: pytest.FixtureRequest) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    async with proxy_for(server, listening=True) as proxy:
        configure(server.settings(port=proxy.port, connect_timeout_seconds=0.5))
        try:
            _, exc = await timed_failure(ping)
        finally:
            await dispose_engine()
            configure(None)
    assert isinstance(exc, TimeoutError)
    assert "DB_CONNECT_TIMEOUT_SECONDS=0.5" in str(exc), headline(exc)


async def test_sqlite_waits_for_a_lock_no_longer_than_its_busy_timeout(
    tmp_path: Path, fault_report: FaultReport
) -> None:
    """SQLite has no network to lose; its one unbounded wait would be another process's lock."""
    path = tmp_path / "locked.db"
    configure(DatabaseSettings(type="sqlite", name=str(path), sqlite_busy_timeout_seconds=1.0, _env_file=None))
    try:
        async with get_engine().begin() as conn:
            await conn.run_sync(OutageBase.metadata.create_all)
        other = sqlite3.connect(path, isolation_level=None)  # another process, as far as SQLite can tell
        try:
            other.execute("BEGIN IMMEDIATE")

            async def write() -> None:
                async with UnitOfWork() as session:
                    session.add(Item(key="waited"))

            elapsed, exc = await timed_failure(write)
            assert elapsed <= 1.0 + MARGIN, f"{headline(exc)} after {elapsed:.2f}s"
            assert "database is locked" in str(exc), headline(exc)
            other.execute("COMMIT")
        finally:
            other.close()
        await write()
        async with UnitOfWork() as session:
            assert (await session.scalars(select(Item.key))).all() == ["waited"]
    finally:
        await dispose_engine()
        configure(None)
    fault_report.add("lock held by another process (busy timeout)", "sqlite", injected=1, recovered=1)


# --- 3. The server kills a session mid-transaction ------------------------------------------------


async def fill_pool(backend: str, connections: int) -> None:
    """Open ``connections`` connections at once, so the pool holds that many afterwards."""

    async def hold() -> None:
        async with UnitOfWork() as session:
            await session.execute(text(OWN_ID[backend]))
            await asyncio.sleep(0.05)

    await asyncio.gather(*(hold() for _ in range(connections)))


async def fifty_checkouts(backend: str) -> int:
    """The next 50 checkouts, one after another so that each pooled connection comes up again."""
    done = 0
    for _ in range(50):
        await own_id(backend)
        done += 1
    return done


async def stored_names(schema: SimpleNamespace) -> set[str]:
    async with UnitOfWork() as session:
        return set((await session.scalars(select(schema.User.name))).all())


@pytest.mark.parametrize("settings", ["postgres", "mysql"], indirect=True)
async def test_a_session_killed_mid_transaction_is_a_disconnect_and_the_pool_recovers(
    settings: DatabaseSettings,
    schema: SimpleNamespace,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    fault_report: FaultReport,
) -> None:
    backend = settings.type or ""
    server: Server = request.getfixturevalue(f"{backend}_server")
    caplog.set_level(logging.WARNING, logger="db_core")
    kills, recovered = 3, 0
    for round_ in range(kills):
        await fill_pool(backend, 5)
        with pytest.raises(DBAPIError) as info:
            async with UnitOfWork() as session:
                session.add(schema.User(name=f"killed-{round_}"))
                await session.flush()
                await kill(server, (await session.execute(text(OWN_ID[backend]))).scalar_one())
                await session.execute(text("SELECT 1"))
        assert info.value.connection_invalidated, headline(info.value)
        # The error says in words what happened, whatever the driver's message;
        # and the unit of work ended on that error alone: no failed rollback noted or logged.
        assert getattr(info.value, "__notes__", []) == [LOST_CONNECTION_NOTE]
        assert not [r.getMessage() for r in caplog.records if r.name == "db_core"]
        assert await fifty_checkouts(backend) == 50
        recovered += 1
    assert not {name for name in await stored_names(schema) if name.startswith("killed")}
    what = "pg_terminate_backend" if backend == "postgres" else "KILL"
    fault_report.add(f"session killed mid-transaction ({what})", backend, injected=kills, recovered=recovered)
    print(f"\n[{backend}] {headline(info.value)}")


@pytest.mark.parametrize("settings", ["postgres", "mysql"], indirect=True)
async def test_the_idle_in_transaction_timeout_is_a_disconnect_and_the_pool_stays_healthy(
    settings: DatabaseSettings, schema: SimpleNamespace, fault_report: FaultReport
) -> None:
    """sqlalchemy#13241: a session the server ends for idling in a transaction must not go back to the pool.

    PostgreSQL: 200 ms, with idle times scattered around it, so that some next
    statements cross the server's termination message on the wire (the race
    that surfaced as asyncpg's InternalClientError). MariaDB counts in seconds.
    """
    backend = settings.type or ""
    if backend == "postgres":
        # LOCAL: a session that commits in time does not take the short timeout back to the pool.
        set_timeout, idle, rounds, sessions = "SET LOCAL idle_in_transaction_session_timeout = 200", (0.17, 0.3), 3, 20
    else:
        set_timeout, idle, rounds, sessions = "SET SESSION idle_transaction_timeout = 1", (1.3, 1.5), 1, 5
    rng = random.Random(13241)
    killed: list[DBAPIError] = []
    committed: set[str] = set()
    rolled_back: set[str] = set()

    async def idle_in_transaction(name: str) -> None:
        try:
            async with UnitOfWork() as session:
                await session.execute(text(set_timeout))
                session.add(schema.User(name=name))
                await session.flush()
                await asyncio.sleep(rng.uniform(*idle))
                await session.execute(text("SELECT 1"))
        except DBAPIError as exc:
            killed.append(exc)
            rolled_back.add(name)
        else:
            committed.add(name)

    for r in range(rounds):
        await asyncio.gather(*(idle_in_transaction(f"idle-{r}-{i}") for i in range(sessions)))
    assert killed, "no session was ended by the timeout"
    not_disconnects = [headline(exc) for exc in killed if not exc.connection_invalidated]
    assert not not_disconnects, not_disconnects
    assert await fifty_checkouts(backend) == 50
    stored = await stored_names(schema)
    lost = committed - stored
    assert not lost
    assert not (rolled_back & stored)
    fault_report.add(
        "idle-in-transaction timeout ends the session", backend, injected=len(killed), recovered=len(killed)
    )
    print(
        f"\n[{backend}] {len(killed)} killed, {len(committed)} committed in time; "
        + "; ".join(f"{n} x {line}" for line, n in Counter(headline(e) for e in killed).items())
    )


# --- 4. MariaDB closes idle pooled connections (wait_timeout) -------------------------------------


async def test_mariadb_wait_timeout_needs_pre_ping_or_a_shorter_recycle(
    mysql_server: Server, fault_report: FaultReport
) -> None:
    """After 3 s idle against ``wait_timeout=2``, the next query works with pre-ping or a 1 s recycle.

    ``wait_timeout`` is set for the test's own sessions only, through the
    driver's ``init_command`` in ``DB_OPTIONS`` (aiomysql runs it on every new
    connection). With neither pre-ping nor recycle, the first query fails
    with a disconnect-type error and the one after works: that failed request
    is what pre-ping is for.
    """
    short_wait = {"init_command": "SET SESSION wait_timeout = 2"}
    variants = {
        "pre-ping": mysql_server.settings(options=short_wait, pool_pre_ping=True, pool_recycle_seconds=3600),
        "recycle": mysql_server.settings(options=short_wait, pool_pre_ping=False, pool_recycle_seconds=1),
        "neither": mysql_server.settings(options=short_wait, pool_pre_ping=False, pool_recycle_seconds=3600),
    }
    # One engine each, side by side, so that the three share one 3 s wait.
    engines = {name: get_connector(s).create_engine() for name, s in variants.items()}
    makers = {name: async_sessionmaker(engine, expire_on_commit=False) for name, engine in engines.items()}
    try:
        first = {}
        for name, maker in makers.items():
            async with UnitOfWork(maker) as session:
                assert (await session.execute(text("SELECT @@SESSION.wait_timeout"))).scalar_one() == 2
            first[name] = await own_id("mysql", maker)
        await asyncio.sleep(3)
        for name in ("pre-ping", "recycle"):
            assert await own_id("mysql", makers[name]) != first[name]  # a new connection, silently
        with pytest.raises(DBAPIError) as info:
            await own_id("mysql", makers["neither"])
        assert info.value.connection_invalidated, headline(info.value)
        assert await own_id("mysql", makers["neither"]) != first["neither"]
    finally:
        for engine in engines.values():
            await engine.dispose()
    fault_report.add("idle connection closed by the server (wait_timeout)", "mysql", injected=2, recovered=2)
    print(f"\n[mysql, neither pre-ping nor recycle] {headline(info.value)}")
