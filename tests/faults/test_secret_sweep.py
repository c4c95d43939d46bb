"""The secret sweep: every failure path, everything it emits, and the password nowhere.

The password of ``tests/dbtests/secrets.py`` (``S3cr3t@p:ss/#%é``) really logs
in: as a throwaway user on the system PostgreSQL (trust), on a PostgreSQL of
the run's own that checks it (scram-sha-256) and on MariaDB. ``test_secrets.py``
covers a wrong password, an unreachable host, a malformed URL, ``echo`` at
DEBUG and ``db check`` one by one; here are the paths it lacks (a pool
timeout, a statement timeout, a connection killed mid-query) and the sweep,
which runs every path (TLS failures aside: ``test_tls.py`` sweeps those) with
the root logger at DEBUG and ``echo=True``, and collects all that comes out:
each log record formatted with its traceback and its raw fields, what the echo
handler wrote, stdout and stderr at the file-descriptor level, ``db check``'s
output, and the str, repr, args and formatted traceback of every exception
and of every exception chained to it. Failing statements carry the password
as a bound parameter too.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db_core import ConfigurationError, UnitOfWork, configure, dispose_engine, get_engine, ping
from dbtests.leaks import FaultReport
from dbtests.secrets import (
    LOGIN_ERRORS,
    PASSWORD,
    UNREACHABLE_PORT,
    Login,
    assert_no_secret,
    db_check,
    error_texts,
)
from dbtests.servers import PostgresCluster, admin

# The fixtures: login, checked_login and the servers' users behind them.
pytest_plugins = ["dbtests.secrets"]

STATEMENT_TIMEOUT = 0.2
POOL_TIMEOUT = 0.2


# --- what a path emitted -------------------------------------------------------------------------


@dataclass
class Capture:
    """Collects, path by path, everything emitted: logs, the echo handler's stream, stdout/stderr, errors."""

    caplog: pytest.LogCaptureFixture
    capfd: pytest.CaptureFixture[str]
    echo_stream: io.StringIO = field(default_factory=io.StringIO)
    seen_records: int = 0
    errors: dict[str, BaseException] = field(default_factory=dict)

    def error(self, label: str, exc: BaseException) -> None:
        self.errors[label] = exc

    def collect(self) -> dict[str, str]:
        """The texts emitted since the last call, by where they were found."""
        texts: dict[str, str] = {}
        records = self.caplog.records[self.seen_records :]
        self.seen_records = len(self.caplog.records)
        for number, record in enumerate(records):
            where = f"log record {number} ({record.name}, {record.levelname})"
            texts[where] = self.caplog.handler.format(record)  # message and formatted traceback
            texts[f"{where}: its fields"] = repr(vars(record))
        out, err = self.capfd.readouterr()
        texts["stdout"], texts["stderr"] = out, err
        texts["echo handler's stream"] = self.echo_stream.getvalue()
        self.echo_stream.seek(0)
        self.echo_stream.truncate()
        for label, exc in self.errors.items():
            texts.update({f"{label}: {where}": text_ for where, text_ in error_texts(exc).items()})
        self.errors.clear()
        return texts


def leaks_in(texts: dict[str, str]) -> list[str]:
    """One line per text that holds the password in any form; empty when none does."""
    found = []
    for where, text_ in texts.items():
        try:
            assert_no_secret(text_, where)
        except AssertionError as leak:
            found.append(str(leak))
    return found


@contextmanager
def echo_into(stream: io.StringIO) -> Iterator[None]:
    """Point SQLAlchemy's echo handlers at ``stream``: made once per process, they hold the
    sys.stdout of whichever test first echoed, which no capture of this test would see."""
    handlers = [
        handler
        for name in ("sqlalchemy.engine.Engine", "sqlalchemy.pool")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    saved = [handler.stream for handler in handlers]
    for handler in handlers:
        handler.stream = stream
    try:
        yield
    finally:
        for handler, old in zip(handlers, saved, strict=True):
            handler.stream = old


async def use(settings: Any) -> None:
    """Make ``settings`` the configured ones, for an engine of their own."""
    await dispose_engine()
    configure(settings)


# --- the servers' admin, to find and kill the test's own connection --------------------------------

Admin = Callable[..., Awaitable[list[Any]]]


@pytest.fixture
def server_admin(login: Login, request: pytest.FixtureRequest) -> Admin:
    """Runs statements as the admin of the server ``login`` logs in to."""
    if login.backend == "mysql":
        return lambda *statements: admin("mysql", statements)
    if request.node.callspec.params["login"] == "postgres-scram":
        cluster: PostgresCluster = request.getfixturevalue("scram_server")
        return cluster.admin
    return lambda *statements: admin("postgres", statements)


def sleep_sql(login: Login, seconds: float) -> str:
    """A statement that sleeps, with the password as a bound parameter (never to be shown)."""
    if login.backend == "mysql":
        return f"SELECT SLEEP({seconds}), :p"
    return f"SELECT pg_sleep({seconds}), CAST(:p AS text)"


async def backend_id(connection: AsyncConnection, login: Login) -> int:
    query = "SELECT CONNECTION_ID()" if login.backend == "mysql" else "SELECT pg_backend_pid()"
    return int((await connection.execute(text(query))).scalar_one())


async def wait_until_running(server_admin: Admin, login: Login, pid: int) -> None:
    if login.backend == "mysql":
        query = f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {pid} AND INFO LIKE 'SELECT SLEEP%'"
    else:
        query = f"SELECT pid FROM pg_stat_activity WHERE pid = {pid} AND state = 'active'"
    deadline = time.monotonic() + 10
    while not await server_admin(query):
        assert time.monotonic() < deadline, f"the sleeping statement of connection {pid} never showed up"
        await asyncio.sleep(0.05)


async def kill(server_admin: Admin, login: Login, pid: int) -> None:
    """End the one connection ``pid`` of this test: never any other."""
    if login.backend == "mysql":
        await server_admin(f"KILL CONNECTION {pid}")
    else:
        rows = await server_admin(f"SELECT pg_terminate_backend({pid})")
        assert [tuple(row) for row in rows] == [(True,)], f"connection {pid} was not terminated: {rows}"


# --- the failure paths ---------------------------------------------------------------------------
# Each makes db_core fail with the password in use, hands the exception to the capture,
# and fails the test if the failure did not happen.


async def pool_timeout(login: Login, capture: Capture, echo: bool) -> None:
    """One connection in the pool, held; the next checkout gives up after DB_POOL_TIMEOUT_SECONDS."""
    await use(login.settings(pool_size=1, max_overflow=0, pool_timeout_seconds=POOL_TIMEOUT, echo=echo))
    async with get_engine().connect() as held:
        await held.execute(text("SELECT 1"))
        with pytest.raises(sa_exc.TimeoutError) as info:
            async with UnitOfWork() as session:
                await session.execute(text("SELECT :p"), {"p": PASSWORD})
    capture.error("pool timeout", info.value)


async def statement_timeout(login: Login, capture: Capture, echo: bool) -> None:
    """DB_STATEMENT_TIMEOUT_SECONDS stops a sleep on the server."""
    await use(login.settings(statement_timeout_seconds=STATEMENT_TIMEOUT, echo=echo))
    # A sleep that ran to its end would raise nothing.
    with pytest.raises(sa_exc.DBAPIError) as info:
        async with UnitOfWork() as session:
            await session.execute(text(sleep_sql(login, 2)), {"p": PASSWORD})
    capture.error("statement timeout", info.value)


async def killed_mid_query(login: Login, capture: Capture, echo: bool, server_admin: Admin) -> None:
    """The server ends the connection while a statement runs on it."""
    await use(login.settings(echo=echo))
    async with get_engine().connect() as connection:
        pid = await backend_id(connection, login)
        running = asyncio.create_task(connection.execute(text(sleep_sql(login, 30)), {"p": PASSWORD}))
        await wait_until_running(server_admin, login, pid)
        await kill(server_admin, login, pid)
        with pytest.raises(sa_exc.DBAPIError) as info:
            await running
    capture.error("connection killed mid-query", info.value)


async def wrong_password(login: Login, capture: Capture, echo: bool) -> None:
    """A near miss of the password (the real one with one character more), on a server that checks it."""
    await use(login.settings(PASSWORD + "x", echo=echo))
    with pytest.raises(LOGIN_ERRORS) as info:
        await ping()
    capture.error("wrong password", info.value)
    with pytest.raises(LOGIN_ERRORS) as info:
        async with UnitOfWork() as session:
            await session.execute(text("SELECT 1"))
    capture.error("wrong password in a unit of work", info.value)


async def unreachable_host(login: Login, capture: Capture, echo: bool) -> None:
    await use(login.settings(port=UNREACHABLE_PORT, echo=echo))
    with pytest.raises(Exception) as info:  # noqa: PT011 - whatever the driver raises, it must not show the password
        await ping()
    capture.error("unreachable host", info.value)


async def malformed_url(login: Login, capture: Capture, echo: bool) -> None:
    """The password pasted into DB_URL unencoded: its "@", ":" and "/" break the URL."""
    scheme = "postgresql" if login.backend == "postgres" else "mysql"
    raw = f"{scheme}://{login.user}:{PASSWORD}@{login.host}:{login.port}/{login.database}"
    await use(None)
    with (
        mock.patch.dict(os.environ, {"DB_URL": raw, "DB_ECHO": str(echo).lower()}),
        pytest.raises(ConfigurationError) as info,
    ):
        get_engine()
    capture.error("malformed DB_URL", info.value)


async def echoed_statements(login: Login, capture: Capture, echo: bool) -> None:
    """The password logs in, travels as a parameter of statements that work and of one that fails."""
    await use(login.settings(echo=echo))
    async with UnitOfWork() as session:
        user = (await session.execute(text("SELECT current_user"))).scalar_one()
        assert str(user).split("@")[0] == login.user, f"logged in as {user!r}, not {login.user!r}"
        length = "CHAR_LENGTH" if login.backend == "mysql" else "char_length"
        assert (await session.execute(text(f"SELECT {length}(:p)"), {"p": PASSWORD})).scalar_one() == len(PASSWORD)
    with pytest.raises(sa_exc.DBAPIError) as info:
        async with UnitOfWork() as session:
            await session.execute(text("SELECT :p FROM db_test_no_such_table"), {"p": PASSWORD})
    capture.error("failing statement", info.value)


def db_checks(login: Login, checked: bool, tmp_path: Path) -> dict[str, str]:
    """``db check`` with DB_ECHO=true: logging in, and failing every way it can; its output by case."""
    scheme = "postgresql" if login.backend == "postgres" else "mysql"
    echo = {"DB_ECHO": "true"}
    runs = {
        "logs in": {**login.env(), **echo},
        "unreachable": {**login.env(), "DB_PORT": str(UNREACHABLE_PORT), **echo},
        "malformed DB_URL": {
            "DB_URL": f"{scheme}://{login.user}:{PASSWORD}@{login.host}:{login.port}/{login.database}",
            **echo,
        },
    }
    if checked:
        runs["wrong password"] = {**login.env(PASSWORD + "x"), **echo}
    with ThreadPoolExecutor(len(runs)) as pool:
        results = dict(zip(runs, pool.map(lambda env: db_check(env, tmp_path), runs.values()), strict=True))
    expected = {"logs in": 0, "unreachable": 1, "malformed DB_URL": 2, "wrong password": 1}
    texts = {}
    for case, result in results.items():
        assert result.returncode == expected[case], f"db check [{case}]: {result}"
        texts[f"db check [{case}] stdout"] = result.stdout
        texts[f"db check [{case}] stderr"] = result.stderr
    return texts


# --- the new paths, one by one -------------------------------------------------------------------


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[Capture]:
    """Logs at DEBUG from every logger (db_core and sqlalchemy included), and stdout/stderr, collected."""
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "db_core"):
        caplog.set_level(logging.DEBUG, logger=name)
    found = Capture(caplog, capfd)
    with echo_into(found.echo_stream):
        yield found


@pytest.fixture
async def unconfigured() -> Any:
    yield
    await dispose_engine()
    configure(None)


async def test_pool_timeout_never_shows_the_password(login: Login, capture: Capture, unconfigured: None) -> None:
    await pool_timeout(login, capture, echo=False)
    await dispose_engine()
    assert not leaks_in(capture.collect())


async def test_statement_timeout_never_shows_the_password(login: Login, capture: Capture, unconfigured: None) -> None:
    await statement_timeout(login, capture, echo=False)
    await dispose_engine()
    assert not leaks_in(capture.collect())


async def test_connection_killed_mid_query_never_shows_the_password(
    login: Login, capture: Capture, server_admin: Admin, unconfigured: None
) -> None:
    await killed_mid_query(login, capture, echo=False, server_admin=server_admin)
    await dispose_engine()
    assert not leaks_in(capture.collect())


# --- the sweep -----------------------------------------------------------------------------------


async def test_secret_sweep(
    login: Login,
    capture: Capture,
    server_admin: Admin,
    unconfigured: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    fault_report: FaultReport,
) -> None:
    """Every failure path with the root logger at DEBUG and echo=True: the password shows nowhere."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    checked = request.node.callspec.params["login"] != "postgres-trust"  # the trusting server takes any password
    paths: dict[str, Callable[[], Awaitable[None]]] = {
        "echoed statements": lambda: echoed_statements(login, capture, echo=True),
        "pool timeout": lambda: pool_timeout(login, capture, echo=True),
        "statement timeout": lambda: statement_timeout(login, capture, echo=True),
        "connection killed mid-query": lambda: killed_mid_query(login, capture, True, server_admin),
        "unreachable host": lambda: unreachable_host(login, capture, echo=True),
        "malformed DB_URL": lambda: malformed_url(login, capture, echo=True),
    }
    if checked:
        paths["wrong password"] = lambda: wrong_password(login, capture, echo=True)
    leaks: dict[str, list[str]] = {}
    echoed = ""
    for name, run in paths.items():
        await run()
        await dispose_engine()  # its pool's goodbyes are logged too
        texts = capture.collect()
        echoed += texts["echo handler's stream"] + texts["stdout"]
        leaks[name] = leaks_in(texts)
    leaks["db check"] = leaks_in(db_checks(login, checked, tmp_path))
    clean = [name for name, found in leaks.items() if not found]
    fault_report.add("secret sweep", login.backend, injected=len(leaks), recovered=len(clean))
    assert "char_length" in echoed.lower(), "echo=True wrote no SQL: the sweep did not see what echo shows"
    assert len(clean) == len(leaks), "\n".join(line for found in leaks.values() for line in found)
