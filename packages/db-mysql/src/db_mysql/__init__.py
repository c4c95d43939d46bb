"""db_mysql: the MySQL and MariaDB connector for db_core, over aiomysql (``DB_TYPE=mysql``)."""

from __future__ import annotations

import asyncio
import functools
import math
import re
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiomysql
from aiomysql.connection import CLIENT  # pymysql.constants.CLIENT, without pymysql stubs for mypy
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from db_core import DBConnector, ShellCommand
from db_mysql.__about__ import __version__

__all__ = ["MySQLConnector", "__version__"]


# ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
_TRANSIENT = frozenset({1213, 1205})
_ER_SPECIFIC_ACCESS_DENIED = 1227
_ER_BAD_DB = 1049
# Statements after which the transaction is over (MariaDB's "Statements that cause an implicit commit").
_SKIP = r"\A(?:\s|--[^\n]*\n|/\*(?:[^*]|\*(?!/))*\*/)*"
_IMPLICIT_COMMIT = re.compile(
    _SKIP + r"(?:CREATE|ALTER|DROP|RENAME|TRUNCATE|GRANT|REVOKE|(?:UN)?LOCK\s+TABLES?"
    r"|(?:ANALYZE|OPTIMIZE|REPAIR)\s+TABLE)\b",
    re.IGNORECASE,
)
_DATABASE_EXISTS = text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name")
_TEMPORARY = re.compile(_SKIP + r"(?:CREATE|DROP)\s+TEMPORARY\b", re.IGNORECASE)


class MySQLConnector(DBConnector):
    """MySQL and MariaDB through aiomysql; also answers to ``mariadb``.

    Connections use ``utf8mb4`` and refuse ``LOAD DATA LOCAL INFILE``.
    """

    name = "mysql"
    drivername = "mysql+aiomysql"
    url_schemes = ("mysql", "mariadb")
    api_version = "1.0"
    default_port = 3306

    def get_url(self) -> URL:
        """The URL, with the password prepared for aiomysql (see below)."""
        url = super().get_url()
        if url.password:
            # aiomysql encodes the password as latin-1, while servers hash the UTF-8
            # bytes; handing it the UTF-8 bytes as latin-1 characters sends those bytes.
            url = url.set(password=str(url.password).encode("utf-8").decode("latin-1"))
        return url

    def in_transaction(self, dbapi_connection: Any) -> bool:
        """From the server's status flags of the last reply: no round trip."""
        return bool(dbapi_connection.driver_connection.get_transaction_status())

    def is_transient(self, error: BaseException) -> bool:
        """Error 1213 (a deadlock, or a Galera certification conflict at COMMIT) and 1205 (a lock wait timeout).

        After 1205 the server has rolled back only the statement; the retry
        starts from a full rollback of the unit of work.
        """
        return _errno(error) in _TRANSIENT

    def is_missing_database(self, error: BaseException) -> bool:
        """Error 1049 (ER_BAD_DB_ERROR): ``Unknown database '...'``."""
        return _errno(error) == _ER_BAD_DB

    async def replica_lag_seconds(self, connection: AsyncConnection) -> float | None:
        """``Seconds_Behind_Master`` of ``SHOW SLAVE STATUS``; infinite while replication is stopped or broken.

        ``None`` on a server that replicates from nothing, or when the user may
        not look (it needs the REPLICATION CLIENT or SLAVE MONITOR privilege):
        then only reachability is checked.
        """
        try:
            result = await connection.exec_driver_sql("SHOW SLAVE STATUS")
        except DBAPIError as exc:
            if exc.orig is not None and _errno(exc.orig) == _ER_SPECIFIC_ACCESS_DENIED:
                return None
            raise
        row = result.mappings().first()
        if row is None:
            return None
        lag = row.get("Seconds_Behind_Master")
        return math.inf if lag is None else float(lag)

    async def max_connections(self, connection: AsyncConnection) -> int | None:
        """``@@max_connections`` (one more is kept for a user with SUPER or CONNECTION ADMIN)."""
        return int(await connection.scalar(text("SELECT @@max_connections")) or 0) or None

    def commits_implicitly(self, statement: str) -> bool:
        """DDL, account and lock statements: MySQL and MariaDB commit the open transaction before them.

        ``CREATE``/``DROP TEMPORARY TABLE`` do not.
        """
        return bool(_IMPLICIT_COMMIT.match(statement)) and not _TEMPORARY.match(statement)

    async def create_database(self) -> bool:
        """``CREATE DATABASE`` in ``utf8mb4`` (as the connections are), unless it exists."""
        # Checked first: IF NOT EXISTS / IF EXISTS leave a note that pymysql raises as a Warning.
        async with self.server_connection(None) as connection:
            if await connection.scalar(_DATABASE_EXISTS, {"name": self.database}):
                return False
            name = connection.dialect.identifier_preparer.quote_identifier(self.database)
            await connection.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            return True

    async def drop_database(self) -> None:
        """``DROP DATABASE`` if it exists (idle connections to it do not block it)."""
        async with self.server_connection(None) as connection:
            if await connection.scalar(_DATABASE_EXISTS, {"name": self.database}):
                name = connection.dialect.identifier_preparer.quote_identifier(self.database)
                await connection.exec_driver_sql(f"DROP DATABASE {name}")

    def is_closed(self, dbapi_connection: Any) -> bool:
        """Whether the server has hung up: something arrived while the connection was idle (no round trip).

        An idle connection receives nothing unless the server is closing it:
        the end of the stream or a reset (MariaDB's ``wait_timeout``), possibly
        after a last error packet. aiomysql's stream reader is private, and so
        is the buffer such a packet waits in; without them the answer is "not known".
        """
        driver = dbapi_connection.driver_connection
        if driver.closed:
            return True
        reader = getattr(driver, "_reader", None)
        if not isinstance(reader, asyncio.StreamReader):
            return False
        return reader.at_eof() or reader.exception() is not None or bool(getattr(reader, "_buffer", None))

    @contextmanager
    def shell(self, arguments: Sequence[str]) -> Iterator[ShellCommand]:
        """``mariadb`` (else ``mysql``) on this database, over TCP, in utf8mb4.

        The password is in an option file of its own (``[client]``, mode 0600,
        removed when the client exits), which ``--defaults-extra-file``, the
        first argument, names. TLS: ``--ssl-ca``, ``--ssl-cert``, ``--ssl-key``
        and the mode (the MariaDB client: ``--skip-ssl``, ``--ssl``, and
        ``--ssl-verify-server-cert`` for both ``verify-ca`` and ``verify-full``,
        so the host name is checked too; MySQL's: ``--ssl-mode``).
        ``DB_APPLICATION_NAME`` has no equivalent in these clients.
        """
        s = self.settings
        client = next((name for name in ("mariadb", "mysql") if shutil.which(name)), "mariadb")
        argv = [
            client,
            "--protocol=TCP",
            f"--host={s.host}",
            f"--port={self.port}",
            "--default-character-set=utf8mb4",
            f"--connect-timeout={max(1, math.ceil(s.connect_timeout_seconds))}",
        ]
        if s.user:
            argv.append(f"--user={s.user}")
        argv += _tls_options(client, s.ssl_mode, s.ssl_ca_file, s.ssl_cert_file, s.ssl_key_file)
        argv.append(f"--database={self.database}")
        password = s.password.get_secret_value()
        if not password:
            yield ShellCommand([*argv, *arguments], package="mariadb-client")
            return
        with self.private_file(f"[client]\npassword={_option_value(password)}\n", "client.cnf") as path:
            # The client reads --defaults-extra-file only as its very first argument.
            command = [client, f"--defaults-extra-file={path}", *argv[1:], *arguments]
            yield ShellCommand(command, package="mariadb-client")

    def get_engine_args(self) -> dict[str, Any]:
        """READ COMMITTED, set once per connection: each statement of a read-write unit sees the latest commits.

        As on PostgreSQL (and as Django sets it): under InnoDB's REPEATABLE READ a
        unit that waited for another's lock, then lost a unique-key race to it,
        still read the snapshot of its first statement, without the row it
        collided with. Read-only units keep one snapshot (``DBConnector.read_only_engine``).
        """
        return {**super().get_engine_args(), "isolation_level": "READ COMMITTED"}

    def get_connect_args(self) -> dict[str, Any]:
        """utf8mb4, no local infile, the connect timeout, TLS and the program name."""
        s = self.settings
        args: dict[str, Any] = {
            "charset": "utf8mb4",
            "local_infile": False,
            "connect_timeout": s.connect_timeout_seconds,
        }
        if s.application_name:
            args["program_name"] = s.application_name
        # aiomysql's connect_timeout covers only the TCP connect; a server that accepts
        # and then never greets would hang the handshake forever. Bound all of it.
        require_tls = s.ssl_mode in ("require", "verify-ca", "verify-full")
        args["async_creator_fn"] = functools.partial(
            _connect_within, s.connect_timeout_seconds, require_tls, s.statement_timeout_seconds
        )
        context = self.ssl_context()
        if context is not None:
            args["ssl"] = context
            # aiomysql reports a failed TLS handshake as "Can't connect to MySQL server", the reason
            # only in the chained exception; say in the error itself what failed and what to check.
            args["async_creator_fn"] = functools.partial(
                _explain_tls_errors, args["async_creator_fn"], f"{s.host}:{self.port}", self
            )
        return args


def _errno(error: BaseException) -> object:
    """The server's error number, the first argument of pymysql's errors (``None`` for others)."""
    args: tuple[object, ...] = getattr(error, "args", ())
    return args[0] if args else None


def _option_value(value: str) -> str:
    """``value`` double-quoted for a MySQL option file, with the escapes its parser undoes."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}
    return '"' + "".join(escapes.get(character, character) for character in value) + '"'


def _tls_options(client: str, mode: str | None, ca: Path | None, cert: Path | None, key: Path | None) -> list[str]:
    """The client's TLS options for ``DB_SSL_MODE``; unset, like the connector, it uses no TLS and no file."""
    if mode is None:
        return []
    mariadb = _is_mariadb_client(client)
    if mode == "disable":
        return ["--skip-ssl"] if mariadb else ["--ssl-mode=DISABLED"]
    files = [f"--ssl-{name}={path}" for name, path in (("ca", ca), ("cert", cert), ("key", key)) if path is not None]
    if mariadb:
        # No "prefer" (the files alone turn TLS on); verify-ca checks the host name too, stricter than asked.
        flags = {"prefer": [], "require": ["--ssl"]}.get(mode, ["--ssl", "--ssl-verify-server-cert"])
    else:
        names = {"prefer": "PREFERRED", "require": "REQUIRED", "verify-ca": "VERIFY_CA"}
        flags = [f"--ssl-mode={names.get(mode, 'VERIFY_IDENTITY')}"]
    return [*flags, *files]


def _is_mariadb_client(client: str) -> bool:
    """``mariadb``, or a ``mysql`` that is MariaDB's (Debian links it so); Oracle's spells TLS options otherwise."""
    if client == "mariadb":
        return True
    try:
        version = subprocess.run([client, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return True
    return "mariadb" in version.stdout.lower()


async def _connect_within(
    seconds: float, require_tls: bool, statement_timeout: float | None, *args: Any, **kwargs: Any
) -> Any:
    """Connect like ``aiomysql.connect``, the whole handshake bounded by ``seconds``.

    aiomysql closes its socket when connecting fails with an ``Exception`` but
    not when the attempt is cancelled (a request timeout, a client gone), which
    leaks the socket; here the connection is closed on any way out. And where
    aiomysql quietly goes on in plain text when the server offers no TLS, a
    connection that must be encrypted is refused, before it logs in.
    """
    connection = (_TLSOnlyConnection if require_tls else aiomysql.Connection)(*args, **kwargs)
    try:
        await asyncio.wait_for(_handshake(connection, statement_timeout), seconds)
    except TimeoutError:
        connection.close()
        raise TimeoutError(f"no answer from the MySQL server within DB_CONNECT_TIMEOUT_SECONDS={seconds:g}") from None
    except BaseException:
        connection.close()
        raise
    if require_tls and not getattr(connection, "_secure", False):
        connection.close()
        raise ConnectionRefusedError(
            "the MySQL server does not offer TLS, and DB_SSL_MODE requires it: "
            "enable TLS on the server, or set DB_SSL_MODE=prefer or disable"
        )
    return connection


class _TLSOnlyConnection(aiomysql.Connection):  # type: ignore[misc]
    """An aiomysql connection that refuses a server whose greeting offers no TLS, before logging in.

    aiomysql would send the login in plain text: the user name, the password's
    hash, or the password itself when the server (or whoever stripped TLS from
    its greeting) asks for ``mysql_clear_password``. Checking afterwards is too late.
    """

    async def _request_authentication(self) -> None:
        # A Unix socket is local and needs no TLS (libpq ignores sslmode there too).
        if not self._unix_socket and not self.server_capabilities & CLIENT.SSL:
            raise _TLSNotOffered
        await super()._request_authentication()

    async def _connect(self) -> None:
        try:
            await super()._connect()
        except _TLSNotOffered:
            raise ConnectionRefusedError(
                f"the MySQL server at {self._host}:{self._port} does not offer TLS, and DB_SSL_MODE requires it: "
                "enable TLS on the server, or set DB_SSL_MODE=prefer or disable"
            ) from None


class _TLSNotOffered(Exception):
    """Not an OSError, which aiomysql would replace by a "Can't connect" naming no reason."""


async def _handshake(connection: aiomysql.Connection, statement_timeout: float | None) -> None:
    await connection._connect()
    if statement_timeout is not None:
        # The two servers spell it differently; MySQL's limit applies to SELECT only.
        if "mariadb" in connection.get_server_info().lower():
            statement = f"SET SESSION max_statement_time = {statement_timeout:.3f}"
        else:
            statement = f"SET SESSION max_execution_time = {max(1, round(statement_timeout * 1000))}"
        async with connection.cursor() as cursor:
            await cursor.execute(statement)


async def _explain_tls_errors(
    connect: Callable[..., Awaitable[Any]], server: str, connector: MySQLConnector, *args: Any, **kwargs: Any
) -> Any:
    """``connect``, re-raising a failed TLS handshake with a message saying what failed and which setting to check."""
    try:
        return await connect(*args, **kwargs)
    except aiomysql.OperationalError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ssl.SSLError):
            raise
        raise aiomysql.OperationalError(
            exc.args[0] if exc.args else 2003, f"the MySQL server at {server} {connector.describe_tls_failure(cause)}"
        ) from cause
