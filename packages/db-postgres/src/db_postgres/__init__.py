"""db_postgres: the PostgreSQL connector for db_core, over asyncpg (``DB_TYPE=postgres``)."""

from __future__ import annotations

import functools
import math
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db_core import DBConnector, ShellCommand
from db_postgres.__about__ import __version__

__all__ = ["PostgresConnector", "__version__"]


class PostgresConnector(DBConnector):
    """PostgreSQL through asyncpg; also answers to ``postgresql`` and ``pg``."""

    name = "postgres"
    drivername = "postgresql+asyncpg"
    url_schemes = ("postgresql", "postgres")
    api_version = "1.0"
    default_port = 5432
    supports_pgbouncer = True

    def is_closed(self, dbapi_connection: Any) -> bool:
        """Asyncpg's own ``is_closed()``: the server hung up or the connection was terminated (no round trip)."""
        return bool(dbapi_connection.driver_connection.is_closed())

    def setup_engine(self, engine: AsyncEngine) -> None:
        """Behind PgBouncer in transaction mode: the statement timeout set with ``SET LOCAL`` in each transaction.

        PgBouncer 1.18 refuses it as a startup parameter, and a plain ``SET``
        would stay on the server connection for the next client.
        """
        timeout = self.settings.statement_timeout_seconds
        if self.settings.pgbouncer != "transaction" or timeout is None:
            return
        self.execute_at_begin(engine, f"SET LOCAL statement_timeout = {_milliseconds(timeout)}")

    def is_transient(self, error: BaseException) -> bool:
        """SQLSTATE 40001 (serialization failure) and 40P01 (deadlock): the server rolled the transaction back."""
        return _sqlstate(error) in _TRANSIENT

    def is_missing_database(self, error: BaseException) -> bool:
        """SQLSTATE 3D000 (invalid_catalog_name): ``database "..." does not exist``."""
        return _sqlstate(error) == "3D000"

    def read_only_engine(self, engine: AsyncEngine) -> AsyncEngine:
        """``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` (asyncpg's, no extra round trip).

        One snapshot for the whole read-only unit, as on MySQL and SQLite: two
        queries of one unit never see a commit made between them.
        """
        return engine.execution_options(postgresql_readonly=True, isolation_level="REPEATABLE READ")

    async def replica_lag_seconds(self, connection: AsyncConnection) -> float | None:
        """Seconds since the last transaction a standby replayed, when it has WAL still to replay; else 0.

        A standby that has replayed all it received is current, however long
        ago the primary last wrote. ``None`` on a server that is not a standby.
        """
        lag = await connection.scalar(_LAG)
        return None if lag is None else float(lag)

    async def max_connections(self, connection: AsyncConnection) -> int | None:
        """``max_connections`` less the slots reserved for superusers."""
        return int(await connection.scalar(_MAX_CONNECTIONS) or 0) or None

    async def create_database(self) -> bool:
        """``CREATE DATABASE`` from the ``postgres`` maintenance database, unless it exists."""
        async with self.server_connection("postgres") as connection:
            if await connection.scalar(_DATABASE_EXISTS, {"name": self.database}):
                return False
            await connection.exec_driver_sql(f"CREATE DATABASE {_quote(connection, self.database)}")
            return True

    async def drop_database(self) -> None:
        """``DROP DATABASE ... WITH (FORCE)``: the connections to that database (only) are ended first."""
        async with self.server_connection("postgres") as connection:
            name = _quote(connection, self.database)
            await connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @contextmanager
    def shell(self, arguments: Sequence[str]) -> Iterator[ShellCommand]:
        """``psql`` on this database: the server, user and database as a conninfo, the rest through libpq's variables.

        The password is ``PGPASSWORD``, TLS ``PGSSLMODE``, ``PGSSLROOTCERT``,
        ``PGSSLCERT`` and ``PGSSLKEY``, the application name ``PGAPPNAME``, the
        connect timeout ``PGCONNECT_TIMEOUT`` (whole seconds). The conninfo's
        values are quoted, so a database or user name with spaces, quotes or
        ``=`` reaches libpq as it is.
        """
        s = self.settings
        parts = {"host": s.host, "port": str(self.port), "user": s.user or "", "dbname": self.database}
        conninfo = " ".join(f"{key}={_conninfo_value(value)}" for key, value in parts.items() if value)
        env = {"PGCONNECT_TIMEOUT": str(max(1, math.ceil(s.connect_timeout_seconds)))}
        password = s.password.get_secret_value()
        if password:
            env["PGPASSWORD"] = password
        if s.ssl_mode:
            env["PGSSLMODE"] = s.ssl_mode
        files = {"PGSSLROOTCERT": s.ssl_ca_file, "PGSSLCERT": s.ssl_cert_file, "PGSSLKEY": s.ssl_key_file}
        env.update({variable: str(path) for variable, path in files.items() if path is not None})
        if s.application_name:
            env["PGAPPNAME"] = s.application_name
        yield ShellCommand(["psql", f"--dbname={conninfo}", *arguments], env, package="postgresql-client")

    def get_connect_args(self) -> dict[str, Any]:
        """The connect timeout, TLS, ``application_name`` and ``statement_timeout`` for asyncpg."""
        s = self.settings
        args: dict[str, Any] = {"timeout": s.connect_timeout_seconds}
        server_settings: dict[str, str] = {}
        if s.application_name:
            server_settings["application_name"] = s.application_name
        if s.statement_timeout_seconds is not None and s.pgbouncer != "transaction":
            # The server stops the statement itself (and the connection stays usable),
            # where asyncpg's client-side command_timeout would abandon the connection.
            server_settings["statement_timeout"] = _milliseconds(s.statement_timeout_seconds)
        if server_settings:
            args["server_settings"] = server_settings
        if s.pgbouncer == "transaction":
            # Each transaction may run on another server connection, shared with other clients:
            # no statement may stay prepared under a name, in asyncpg's cache or SQLAlchemy's.
            args["statement_cache_size"] = 0
            args["prepared_statement_cache_size"] = 0
            args["prepared_statement_name_func"] = _statement_name
        if s.ssl_mode == "disable":
            args["ssl"] = False
        elif s.ssl_mode == "prefer":
            # asyncpg's own "prefer" falls back to plain text when the server has no TLS, as libpq does.
            # It verifies nothing and takes no client certificate, but an unusable DB_SSL_* file is
            # still a configuration error, as in every other mode.
            self.ssl_context()
            args["ssl"] = "prefer"
        server = f"{s.host}:{self.port}"
        connect: Callable[..., Awaitable[Any]] = asyncpg.connect
        if s.ssl_mode not in (None, "disable", "prefer"):
            args["ssl"] = self.ssl_context()
            # asyncpg's TLS errors name no setting (and SQLAlchemy 2.0 passes them on as they are).
            connect = functools.partial(_explain_tls_errors, connect, server, self)
        args["async_creator_fn"] = functools.partial(_connect_within, connect, s.connect_timeout_seconds, server)
        return args


_TRANSIENT = frozenset({"40001", "40P01"})


def _quote(connection: AsyncConnection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def _conninfo_value(value: str) -> str:
    """A value for a libpq conninfo string: single-quoted, backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of asyncpg's error, or of the one SQLAlchemy's adapter raised from it."""
    return getattr(error, "sqlstate", None) or getattr(error.__cause__, "sqlstate", None)


def _milliseconds(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def _statement_name() -> str:
    # Unique across every client of a PgBouncer server connection.
    return f"__asyncpg_{uuid.uuid4().hex}__"


_DATABASE_EXISTS = text("SELECT 1 FROM pg_database WHERE datname = :name")
_MAX_CONNECTIONS = text(
    "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
)

_LAG = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL "
    "WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)


async def _connect_within(
    connect: Callable[..., Awaitable[Any]], seconds: float, server: str, *args: Any, **kwargs: Any
) -> Any:
    """``connect``; asyncpg's own timeout (``timeout=``) bounds it, but raises a ``TimeoutError`` saying nothing."""
    try:
        return await connect(*args, **kwargs)
    except TimeoutError:
        raise TimeoutError(
            f"no answer from the PostgreSQL server at {server} within DB_CONNECT_TIMEOUT_SECONDS={seconds:g}"
        ) from None


async def _explain_tls_errors(
    connect: Callable[..., Awaitable[Any]],
    server: str,
    connector: PostgresConnector,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``connect``, re-raising a TLS failure with a message that says what failed and which setting to check."""
    try:
        return await connect(*args, **kwargs)
    except ssl.SSLCertVerificationError as exc:
        error = ssl.SSLCertVerificationError(
            exc.errno or 1, f"the PostgreSQL server at {server} {connector.describe_tls_failure(exc)}"
        )
        error.verify_code, error.verify_message = exc.verify_code, exc.verify_message
        raise error from exc
    except ssl.SSLError as exc:
        raise ssl.SSLError(
            exc.errno or 1, f"the PostgreSQL server at {server}: {connector.describe_tls_failure(exc)}"
        ) from exc
    except ConnectionError as exc:
        if "rejected SSL upgrade" not in str(exc):
            raise
        raise ConnectionRefusedError(
            f"the PostgreSQL server at {server} does not offer TLS, and DB_SSL_MODE={connector.settings.ssl_mode} "
            "requires it: enable TLS on the server (ssl = on), or set DB_SSL_MODE=prefer or disable"
        ) from exc
