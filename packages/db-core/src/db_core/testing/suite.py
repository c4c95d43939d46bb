"""The connector contract as a pytest suite: :class:`ConnectorSuite`, and the :class:`Capabilities` it checks.

Every test is a plain (synchronous) pytest test that runs its own event loop
with :func:`asyncio.run`, so the suite works with or without pytest-asyncio
or anyio, in whatever mode a project configures them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import quote

import pytest
from pydantic import SecretStr
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy.engine import make_url

from db_core.connector import API_VERSION, DBConnector
from db_core.engine import configure, dispose_engine, get_engine
from db_core.errors import ConfigurationError, PoolExhaustedError
from db_core.health import PingResult, ping
from db_core.registry import ENTRY_POINT_GROUP, available_connectors, get_connector, resolve_connector
from db_core.settings import DatabaseSettings
from db_core.testing.relay import Relay, free_port
from db_core.unit_of_work import UnitOfWork

__all__ = ["Capabilities", "ConnectorSuite", "servers_required", "unavailable"]

T = TypeVar("T")

# Every character that has a meaning in a URL, and one that is not ASCII.
SPECIAL_PASSWORD = "p@ss:w/rd#%é ?&=+S3cr3t"


@dataclass(frozen=True)
class Capabilities:
    """What a connector's backend can do; the suite checks each capability declared, and skips the others."""

    network: bool = True
    """The database is a server reached over TCP (``False`` for an embedded one such as SQLite)."""

    savepoints: bool = True
    """A unit of work inside another one is a SAVEPOINT that rolls back alone."""

    statement_timeout: bool = False
    """``DB_STATEMENT_TIMEOUT_SECONDS`` stops a running statement (set :attr:`ConnectorSuite.slow_query`)."""

    tls: bool = False
    """``DB_SSL_MODE`` and the ``DB_SSL_*`` files are honoured."""

    create_database: bool = False
    """``create_database()``/``drop_database()`` make and remove a database (test databases, ``db-pytest``)."""


def servers_required() -> bool:
    """Whether a missing server fails tests instead of skipping them (``CI=true`` or ``DB_TEST_REQUIRE_SERVERS=1``)."""
    flags = (os.environ.get(name, "").strip().lower() for name in ("CI", "DB_TEST_REQUIRE_SERVERS"))
    return any(flag in ("1", "true", "yes") for flag in flags)


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it when servers are required."""
    if servers_required():
        pytest.fail(f"{reason} (servers are required: CI=true or DB_TEST_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


class ConnectorSuite:
    """The connector contract; subclass it as ``Test<Something>`` and set the class attributes.

    Tests that need no server check the distribution (entry point, API
    version, default port, URL building, password masking); the others run
    units of work, savepoints, pool limits, statement timeouts, TLS refusals
    and lost-connection recovery against the database of :meth:`db_settings`.
    """

    connector: ClassVar[str] = ""
    """The connector's entry point name: the ``DB_TYPE`` users set."""

    default_port: ClassVar[int | None] = None
    """The port the connector uses when ``DB_PORT`` is unset (``None`` for an embedded database)."""

    capabilities: ClassVar[Capabilities] = Capabilities()
    """What the backend can do; see :class:`Capabilities`."""

    slow_query: ClassVar[str | None] = None
    """A statement that runs for many seconds (e.g. ``SELECT pg_sleep(30)``), for the statement timeout test."""

    application_name_query: ClassVar[str | None] = None
    """A statement returning the connection's application name (e.g. ``SELECT current_setting('application_name')``)."""

    hang_guard_seconds: ClassVar[float] = 60
    """How long one test's database work may take before the suite calls it a hang."""

    # -- fixtures (override db_settings to connect elsewhere) ------------------------------------------------------

    @pytest.fixture
    def db_settings(self) -> DatabaseSettings:
        """The settings the suite connects with: the ``DB_*`` environment, with ``DB_TYPE`` defaulting to the connector.

        Override this fixture in the subclass to build them another way.
        """
        return DatabaseSettings().model_copy(update={"type": self.connector})

    @pytest.fixture
    def server(self, db_settings: DatabaseSettings) -> DatabaseSettings:
        """:meth:`db_settings`, once its database answered a ping.

        No server listening there: skip, or fail when servers are required. A
        server that answers but refuses the connector (login, protocol): fail.
        """
        try:
            self.run(db_settings, ping)
        except Exception as exc:
            where = get_connector(db_settings).url.render_as_string(hide_password=True)
            reason = f"{type(exc).__name__}: {exc}"
            # Refused, unresolvable, timed out: nobody there. Anything else came from a server.
            if not any(isinstance(e, OSError) and not isinstance(e, ssl.SSLError) for e in chain(exc)):
                pytest.fail(f"the database at {where} was reached, but connecting failed: {reason}", pytrace=False)
            unavailable(
                f"no database to run the {self.connector!r} conformance suite against at {where} "
                f"({reason}); point the DB_* variables at one"
            )
        return db_settings

    @pytest.fixture
    def table(self, server: DatabaseSettings) -> Iterator[Table]:
        """A table of this test's own in :meth:`server`'s database, dropped afterwards."""
        table = Table(
            f"db_core_kit_{uuid.uuid4().hex[:10]}",
            MetaData(),
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("note", String(100)),
        )

        async def create() -> None:
            async with get_engine().begin() as conn:
                await conn.run_sync(table.metadata.create_all)

        async def drop() -> None:
            async with get_engine().begin() as conn:
                await conn.run_sync(table.metadata.drop_all)

        self.run(server, create)
        yield table
        self.run(server, drop)

    # -- helpers ------------------------------------------------------------------------------------------------

    def run(self, settings: DatabaseSettings, body: Callable[[], Awaitable[T]]) -> T:
        """``body()`` on a new event loop, with db_core configured with ``settings`` and disposed afterwards."""

        async def main() -> T:
            configure(settings)
            try:
                async with asyncio.timeout(self.hang_guard_seconds):
                    return await body()
            finally:
                await dispose_engine()
                configure(None)

        return asyncio.run(main())

    def failure(self, settings: DatabaseSettings, body: Callable[[], Awaitable[Any]]) -> BaseException:
        """The exception ``body()`` raises with ``settings`` (the test fails if it raises none, or hangs)."""
        try:
            self.run(settings, body)
        except TimeoutError as exc:
            if isinstance(exc.__cause__ or exc.__context__, asyncio.CancelledError):
                pytest.fail(f"no answer within the suite's hang guard of {self.hang_guard_seconds:g} s")
            return exc
        except Exception as exc:
            return exc
        pytest.fail("expected an error, but it succeeded")

    def network_only(self) -> None:
        """Skip unless the database is a server reached over the network."""
        if not self.capabilities.network:
            pytest.skip(f"{self.connector!r} is an embedded database (Capabilities(network=False))")

    @staticmethod
    def variant(settings: DatabaseSettings, **changes: Any) -> DatabaseSettings:
        """``settings`` with ``changes`` (field names, e.g. ``pool_size=2``)."""
        return settings.model_copy(update=changes)

    # -- the distribution -----------------------------------------------------------------------------------------

    def test_entry_point_is_registered(self) -> None:
        """One installed distribution declares the connector in the ``db_core.connectors`` group."""
        infos = [info for info in available_connectors() if self.connector in (info.name, *info.aliases)]
        assert infos, (
            f"no installed distribution has an entry point {self.connector!r} in the group {ENTRY_POINT_GROUP!r}: "
            f'declare it in pyproject.toml ([project.entry-points."{ENTRY_POINT_GROUP}"] '
            f'{self.connector} = "your_module:YourConnector") and install the distribution (pip install -e .)'
        )
        assert len(infos) == 1, f"{self.connector!r} is claimed by several: {[i.origin for i in infos]}"
        assert infos[0].distribution is not None, f"{self.connector!r} is registered in code, not by an entry point"

    def test_entry_point_loads_a_compatible_connector(self) -> None:
        """The entry point imports a ``DBConnector`` of this name and a compatible ``api_version``."""
        cls = resolve_connector(self.connector)  # ConnectorLoadError says why, naming the distribution
        assert issubclass(cls, DBConnector)
        assert cls.name == self.connector, f"{cls.__qualname__}.name is {cls.name!r}, not its DB_TYPE"
        assert cls.drivername, f"{cls.__qualname__}.drivername must name the SQLAlchemy dialect+driver"
        # Inherited, it would claim whatever db-core is installed, and the registry could never refuse it.
        assert any("api_version" in vars(c) for c in cls.__mro__[: cls.__mro__.index(DBConnector)]), (
            f"{cls.__qualname__} does not declare api_version: set api_version = {API_VERSION!r}, "
            "the connector API it was written for"
        )
        assert str(cls.api_version).partition(".")[0] == API_VERSION.partition(".")[0]

    def test_default_port(self, db_settings: DatabaseSettings) -> None:
        """``DB_PORT`` unset gives the declared default port; set, it is used as it is."""
        assert get_connector(self.variant(db_settings, port=None)).url.port == self.default_port
        if self.capabilities.network:
            assert get_connector(self.variant(db_settings, port=6543)).url.port == 6543

    def test_url_keeps_special_characters_in_credentials(self, db_settings: DatabaseSettings) -> None:
        """User names and passwords with URL syntax in them survive into the URL, and are masked."""
        self.network_only()
        ascii_only = SPECIAL_PASSWORD.replace("é", "")
        url = get_connector(self.variant(db_settings, user="kit user@x", password=SecretStr(ascii_only))).url
        assert (url.username, url.password) == ("kit user@x", ascii_only)
        # A connector may re-encode a non-ASCII password for its driver; it must survive rendering all the same.
        settings = self.variant(db_settings, user="kit user@x", password=SecretStr(SPECIAL_PASSWORD))
        connector = get_connector(settings)
        url = connector.url
        assert url.password
        parsed = make_url(url.render_as_string(hide_password=False))
        assert (parsed.username, parsed.password, parsed.host, parsed.port) == (
            "kit user@x",
            url.password,
            url.host,
            url.port,
        )
        for shown in (url.render_as_string(hide_password=True), repr(connector), repr(settings), str(settings)):
            assert_no_password(shown, SPECIAL_PASSWORD)
            assert_no_password(shown, str(url.password))

    def test_password_is_never_shown_when_connecting_fails(
        self, db_settings: DatabaseSettings, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failed connection's error, its causes and every log line (echo on) hold no password."""
        self.network_only()
        settings = self.variant(
            db_settings,
            host="127.0.0.1",
            port=free_port(),  # nothing listens there
            password=SecretStr(SPECIAL_PASSWORD),
            echo=True,
            connect_timeout_seconds=5.0,
        )
        with caplog.at_level(logging.DEBUG):
            error = self.failure(settings, ping)
        for exc in chain(error):
            assert_no_password(f"{exc!s} {exc!r}", SPECIAL_PASSWORD)
        for record in caplog.records:
            trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
            shown = record.getMessage() + trace
            assert_no_password(shown, SPECIAL_PASSWORD)

    # -- a server -------------------------------------------------------------------------------------------------

    def test_creates_and_drops_a_test_database(self, server: DatabaseSettings) -> None:
        """``create_database()`` once (then it says it existed), and ``drop_database()`` despite an idle connection."""
        if not self.capabilities.create_database:
            pytest.skip(f"{self.connector!r} declares no create_database (Capabilities(create_database=False))")
        name = get_connector(server).test_database_name(f"_kit_{uuid.uuid4().hex[:6]}")
        connector = get_connector(server.for_database(name))
        assert connector.database == name

        async def scenario() -> None:
            try:
                assert await connector.create_database() is True
                assert await connector.create_database() is False, "a second create_database() must say it existed"
                engine = connector.create_engine()
                try:
                    async with engine.connect() as conn:
                        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
                    # The connection now idles in the pool: dropping must not wait for it.
                    await asyncio.wait_for(connector.drop_database(), 30)
                finally:
                    await engine.dispose()
                await connector.drop_database()  # absent: nothing to do, no error
                assert await connector.create_database() is True, "drop_database() left the database behind"
            finally:
                await connector.drop_database()

        asyncio.run(scenario())

    def test_engine_uses_the_connectors_driver_and_pool_size(self, server: DatabaseSettings) -> None:
        """``get_engine()`` uses the connector's driver and ``DB_POOL_SIZE``."""
        settings = self.variant(server, pool_size=3, max_overflow=2)

        async def body() -> tuple[str, int]:
            engine = get_engine()
            return engine.url.drivername, engine.pool.size()  # type: ignore[attr-defined]

        assert self.run(settings, body) == (resolve_connector(self.connector).drivername, 3)

    def test_connect_and_ping(self, server: DatabaseSettings) -> None:
        """A connection is made and ``ping()`` reports the server and its version."""
        result: PingResult = self.run(server, ping)
        assert result.backend
        assert result.server_version

    def test_unit_of_work_commits(self, server: DatabaseSettings, table: Table) -> None:
        """What a unit of work wrote is there in the next one."""

        async def body() -> list[str]:
            async with UnitOfWork() as session:
                await session.execute(insert(table), [{"id": 1, "note": "kept"}, {"id": 2, "note": "also kept"}])
            async with UnitOfWork() as session:
                return list((await session.scalars(select(table.c.note).order_by(table.c.id))).all())

        assert self.run(server, body) == ["kept", "also kept"]

    def test_unit_of_work_rolls_back_on_error(self, server: DatabaseSettings, table: Table) -> None:
        """A unit of work that raises leaves nothing behind."""

        async def body() -> int:
            try:
                async with UnitOfWork() as session:
                    await session.execute(insert(table), [{"id": 1, "note": "undone"}])
                    raise LookupError("the caller's own error")
            except LookupError:
                pass
            async with UnitOfWork() as session:
                return int(await session.scalar(select(func.count()).select_from(table)) or 0)

        assert self.run(server, body) == 0

    def test_savepoint_rolls_back_alone(self, server: DatabaseSettings, table: Table) -> None:
        """A unit of work inside another (a SAVEPOINT) that raises undoes only its own work."""
        if not self.capabilities.savepoints:
            pytest.skip(f"{self.connector!r} declares no savepoints (Capabilities(savepoints=False))")

        async def body() -> list[str]:
            async with UnitOfWork() as session:
                await session.execute(insert(table), [{"id": 1, "note": "outer"}])
                try:
                    async with UnitOfWork() as inner:  # a SAVEPOINT in the same session
                        await inner.execute(insert(table), [{"id": 2, "note": "inner"}])
                        raise LookupError("undo the inner block only")
                except LookupError:
                    pass
                await session.execute(insert(table), [{"id": 3, "note": "after"}])
            async with UnitOfWork() as session:
                return list((await session.scalars(select(table.c.note).order_by(table.c.id))).all())

        assert self.run(server, body) == ["outer", "after"]

    def test_pool_settings_are_honoured(self, server: DatabaseSettings) -> None:
        """At most ``DB_POOL_SIZE + DB_MAX_OVERFLOW`` connections at once.

        One more waits ``DB_POOL_TIMEOUT_SECONDS``, then gets ``PoolExhaustedError``.
        """
        settings = self.variant(server, pool_size=2, max_overflow=1, pool_timeout_seconds=0.5)

        async def body() -> tuple[BaseException | None, int]:
            engine = get_engine()
            async with AsyncExitStack() as held:
                for _ in range(3):  # DB_POOL_SIZE + DB_MAX_OVERFLOW connections at once
                    await held.enter_async_context(engine.connect())
                refused = await error_of(select_one)
            async with UnitOfWork() as session:  # and they all came back
                return refused, int(await session.scalar(text("SELECT 1")) or 0)

        refused, value = self.run(settings, body)
        assert isinstance(refused, PoolExhaustedError), "a fourth connection was handed out beyond 2 + 1"
        assert "DB_POOL_TIMEOUT_SECONDS=0.5" in str(refused)
        assert value == 1

    def test_statement_timeout_stops_the_statement(self, server: DatabaseSettings) -> None:
        """``DB_STATEMENT_TIMEOUT_SECONDS`` stops :attr:`slow_query` with an error; the pool stays usable."""
        if not self.capabilities.statement_timeout:
            pytest.skip(f"{self.connector!r} declares no statement timeout (Capabilities(statement_timeout=False))")
        assert self.slow_query, "set slow_query to a statement that runs for many seconds"
        slow = self.slow_query
        settings = self.variant(server, statement_timeout_seconds=0.5)

        async def slow_unit_of_work() -> None:
            async with UnitOfWork() as session:
                await session.execute(text(slow))

        async def body() -> tuple[BaseException | None, int]:
            stopped = await error_of(slow_unit_of_work)
            async with UnitOfWork() as session:  # the pool is still usable
                return stopped, int(await session.scalar(text("SELECT 1")) or 0)

        stopped, value = self.run(settings, body)
        assert stopped is not None, f"{slow!r} completed although DB_STATEMENT_TIMEOUT_SECONDS=0.5"
        assert value == 1

    def test_lost_idle_connections_are_replaced_unseen(self, server: DatabaseSettings) -> None:
        """Pooled connections dropped while idle are replaced without an error reaching the caller (pre-ping)."""
        relayed = self.relayed(server, pool_pre_ping=True)

        async def body() -> list[int]:
            values = []
            for _ in range(3):  # the relay drops every connection between units of work
                async with UnitOfWork() as session:
                    values.append(int(await session.scalar(text("SELECT 1")) or 0))
                await relayed.relay.cut()
            return values

        assert self.run(relayed.settings, relayed.around(body)) == [1, 1, 1]
        assert relayed.relay.accepted == 3, "the dropped connections were not replaced by new ones"

    def test_connection_lost_in_a_unit_of_work_raises_and_the_next_one_works(self, server: DatabaseSettings) -> None:
        """A connection dropped mid-transaction raises (never hangs); the next unit of work gets a new one."""
        relayed = self.relayed(server, pool_pre_ping=False)

        async def cut_in_the_middle() -> None:
            async with UnitOfWork() as session:
                await session.execute(text("SELECT 1"))
                await relayed.relay.cut()
                await session.execute(text("SELECT 1"))

        async def body() -> tuple[BaseException | None, int]:
            lost = await error_of(cut_in_the_middle)
            async with UnitOfWork() as session:
                return lost, int(await session.scalar(text("SELECT 1")) or 0)

        lost, value = self.run(relayed.settings, relayed.around(body))
        assert lost is not None, "a statement on a dropped connection succeeded"
        assert value == 1

    def test_connect_timeout_ends_a_silent_server(self, db_settings: DatabaseSettings) -> None:
        """A server that accepts and never answers fails the connection, naming ``DB_CONNECT_TIMEOUT_SECONDS``."""
        self.network_only()
        with socket.socket() as silent:  # the kernel accepts; nobody ever answers
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            port = silent.getsockname()[1]
            settings = self.variant(db_settings, host="127.0.0.1", port=port, connect_timeout_seconds=1.0)
            error = self.failure(settings, ping)
        shown = " ".join(str(exc) for exc in chain(error))
        assert "DB_CONNECT_TIMEOUT_SECONDS" in shown, f"the error does not name the setting: {error!r}"

    def test_application_name_reaches_the_server(self, server: DatabaseSettings) -> None:
        """``DB_APPLICATION_NAME`` is what :attr:`application_name_query` reads back from the server."""
        if self.application_name_query is None:
            pytest.skip("set application_name_query to a statement that returns the connection's application name")
        query = self.application_name_query

        async def body() -> object:
            async with UnitOfWork() as session:
                return await session.scalar(text(query))

        assert self.run(self.variant(server, application_name="db-core-kit"), body) == "db-core-kit"

    def test_tls_with_an_unrelated_ca_never_connects(self, server: DatabaseSettings) -> None:
        """``DB_SSL_MODE=verify-full`` with a CA that signed nothing never connects (never silently in plain text)."""
        self.tls_only()
        with as_file(files("db_core.testing") / "unrelated-ca.pem") as ca:
            settings = self.variant(server, ssl_mode="verify-full", ssl_ca_file=ca, connect_timeout_seconds=10.0)
            # Whether the server has TLS or not, nothing signed by this CA can be verified.
            error = self.failure(settings, ping)
        assert not isinstance(error, ConfigurationError), f"the CA file was refused: {error}"
        assert any(isinstance(exc, ssl.SSLError) or _mentions_tls(str(exc)) for exc in chain(error)), (
            f"connecting failed, but not for TLS: {type(error).__name__}: {error}"
        )

    def test_unreadable_ca_file_names_the_setting(self, db_settings: DatabaseSettings, tmp_path: Path) -> None:
        """A missing ``DB_SSL_CA_FILE`` is a ``ConfigurationError`` naming the variable and path, mode set or not."""
        self.tls_only()
        missing = tmp_path / "no-such-ca.pem"
        for mode in (None, "require", "verify-full"):
            settings = self.variant(db_settings, ssl_mode=mode, ssl_ca_file=missing, connect_timeout_seconds=5.0)
            error = self.failure(settings, ping)
            assert isinstance(error, ConfigurationError), f"DB_SSL_MODE={mode}: {type(error).__name__}: {error}"
            assert "DB_SSL_CA_FILE" in str(error)
            assert str(missing) in str(error)

    def test_password_is_not_logged_by_a_unit_of_work(
        self, server: DatabaseSettings, table: Table, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With ``DB_ECHO`` on, a unit of work logs no password."""
        self.network_only()
        password = server.password.get_secret_value()
        if len(password) < 4:
            pytest.skip("the database's password is empty or too short to look for in the logs")
        settings = self.variant(server, echo=True)

        async def body() -> None:
            async with UnitOfWork() as session:
                await session.execute(insert(table), [{"id": 1, "note": "logged"}])

        with caplog.at_level(logging.DEBUG):
            self.run(settings, body)
        assert caplog.records, "echo=True logged nothing"
        for record in caplog.records:
            assert_no_password(record.getMessage(), password)

    # -- helpers for the tests above -----------------------------------------------------------------------------

    def tls_only(self) -> None:
        """Skip unless the connector declares TLS."""
        if not self.capabilities.tls:
            pytest.skip(f"{self.connector!r} declares no TLS (Capabilities(tls=False))")

    def relayed(self, settings: DatabaseSettings, **changes: Any) -> _Relayed:
        """``settings`` through a :class:`Relay` on 127.0.0.1 that the test can cut."""
        self.network_only()
        if settings.host.startswith("/"):
            pytest.skip("the database is reached through a Unix socket, which the relay cannot stand in")
        if settings.ssl_mode == "verify-full":
            pytest.skip("DB_SSL_MODE=verify-full checks the host name, which the relay on 127.0.0.1 changes")
        port = get_connector(settings).port
        assert port is not None
        relay = Relay((settings.host, port))
        return _Relayed(relay, self.variant(settings, host="127.0.0.1", port=relay.port, pool_size=1, **changes))


@dataclass
class _Relayed:
    relay: Relay
    settings: DatabaseSettings

    def around(self, body: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``body`` with the relay started before and closed after."""

        async def wrapped() -> T:
            await self.relay.start()
            try:
                return await body()
            finally:
                await self.relay.close()

        return wrapped


async def error_of(work: Callable[[], Awaitable[Any]]) -> Exception | None:
    """The exception ``await work()`` raises, or ``None`` (a cancellation is not caught)."""
    try:
        await work()
    except Exception as exc:
        return exc
    return None


async def select_one() -> None:
    """``SELECT 1`` on a connection of its own from :func:`~db_core.get_engine`."""
    async with get_engine().connect() as conn:
        await conn.execute(text("SELECT 1"))


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it was raised from or during."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        exc = stack.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        linked = (exc.__cause__, exc.__context__, getattr(exc, "orig", None))
        stack.extend(e for e in linked if isinstance(e, BaseException))


def _mentions_tls(message: str) -> bool:
    return any(word in message.lower() for word in ("ssl", "tls", "certificate"))


def assert_no_password(shown: str, password: str) -> None:
    """Fail if ``shown`` holds ``password`` as it is or URL-quoted."""
    for form in {password, quote(password, safe=""), quote(password)}:
        assert form not in shown, "the password appears in: " + shown.replace(form, "<PASSWORD>")
