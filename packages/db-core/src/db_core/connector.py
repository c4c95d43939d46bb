"""``DBConnector``: the interface a backend implements to plug into db_core.

A connector is a class registered under the entry-point group
``db_core.connectors``. It turns :class:`~db_core.settings.DatabaseSettings`
into a SQLAlchemy URL and engine arguments, and may prepare every new
connection. Everything else (pooling per event loop, units of work, FastAPI)
is db_core's job, so a connector stays small.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, PoolResetState

from db_core.errors import ConfigurationError, ConnectorError
from db_core.pool import QueuePool
from db_core.settings import DatabaseSettings

__all__ = ["API_VERSION", "LOST_CONNECTION_NOTE", "DBConnector", "ShellCommand"]

# PostgreSQL truncates longer identifiers (63 bytes); MySQL refuses names over 64.
_MAX_NAME_LENGTH = 63

API_VERSION = "1.0"
"""The connector interface version this db_core implements, ``"MAJOR.MINOR"``.

A connector declares the version it was written for in
:attr:`DBConnector.api_version`. The registry loads it when the majors are
equal and its minor is not newer than this one (a minor version only adds
hooks); otherwise it refuses it, naming its distribution and the package to
upgrade, instead of failing later in a query.
"""


@dataclass(frozen=True)
class ShellCommand:
    """The backend's interactive client, as :meth:`DBConnector.shell` prepares it for ``db shell``.

    ``argv`` is the command line (the client's name first, found on ``PATH``);
    it never holds the password. ``env`` is added to the client's environment
    (``PGPASSWORD``, ``PGSSLMODE``...). ``package`` names the (Debian) package
    that provides the client, for the one-line error when it is not installed.
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    package: str = ""


class DBConnector:
    """Base class of every backend.

    Subclasses set :attr:`name`, :attr:`drivername` and usually
    :attr:`default_port`, and override the hooks they need.
    """

    name: ClassVar[str] = ""
    """The canonical ``DB_TYPE`` of this backend, e.g. ``"postgres"``."""

    drivername: ClassVar[str] = ""
    """The SQLAlchemy ``dialect+driver`` name, e.g. ``"postgresql+asyncpg"``."""

    default_port: ClassVar[int | None] = None
    """The port used when ``DB_PORT`` is unset (``None`` for embedded databases)."""

    default_database: ClassVar[str] = "app"
    """The database used when ``DB_NAME`` is unset."""

    default_pool_size: ClassVar[int] = 10
    """The pool size used when ``DB_POOL_SIZE`` is unset."""

    default_max_overflow: ClassVar[int] = 20
    """The overflow used when ``DB_MAX_OVERFLOW`` is unset."""

    api_version: ClassVar[str] = API_VERSION
    """The :data:`API_VERSION` this connector was written for, ``"MAJOR.MINOR"``."""

    supports_pgbouncer: ClassVar[bool] = False
    """Whether this connector honours ``DB_PGBOUNCER=transaction``; others refuse the setting."""

    url_schemes: ClassVar[tuple[str, ...]] = ()
    """The ``DB_URL`` schemes (their dialect part) this connector serves; empty: any.

    ``DB_TYPE`` beside ``DB_URL`` picks the connector, so a connector of another
    backend's URLs (a plugin for a PostgreSQL-compatible server) can leave it
    empty; one that lists its schemes refuses a URL of another backend instead
    of connecting somewhere else than the URL says.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        if self.url_schemes and settings.url is not None and settings.type_beside_url:
            url = make_url(settings.url.get_secret_value())
            scheme = url.get_backend_name()
            if scheme not in self.url_schemes:
                shown = settings.mask_password(url.render_as_string(hide_password=True))
                raise ConfigurationError(
                    f"DB_URL ({shown}) is a {scheme}:// URL, but "
                    f"DB_TYPE={settings.type} names the {self.name} connector: unset DB_TYPE to use the "
                    f"URL's backend, or give a {self.url_schemes[0]}:// URL"
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.render_as_string(hide_password=True)!r})"

    @property
    def port(self) -> int | None:
        """``DB_PORT``, or this backend's default port."""
        return self.settings.port if self.settings.port is not None else self.default_port

    @property
    def pool_size(self) -> int:
        """``DB_POOL_SIZE``, or this backend's default."""
        return self.settings.pool_size if self.settings.pool_size is not None else self.default_pool_size

    @property
    def max_overflow(self) -> int:
        """``DB_MAX_OVERFLOW``, or this backend's default."""
        return self.settings.max_overflow if self.settings.max_overflow is not None else self.default_max_overflow

    @property
    def database(self) -> str:
        """``DB_NAME``, or this backend's default database."""
        return self.settings.name or self.default_database

    @property
    def url(self) -> URL:
        """The SQLAlchemy URL to connect to (render it with ``hide_password=True``)."""
        return self.get_url()

    def get_url(self) -> URL:
        """Build the URL from the settings; override for backends with another URL shape."""
        s = self.settings
        return URL.create(
            drivername=self.drivername,
            username=s.user or None,
            password=s.password.get_secret_value() or None,
            host=s.host,
            port=self.port,
            database=self.database,
            query=s.options,
        )

    def get_connect_args(self) -> dict[str, Any]:
        """Arguments passed to the DBAPI ``connect()`` call (timeouts, TLS, ...)."""
        return {}

    def get_engine_args(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~sqlalchemy.ext.asyncio.create_async_engine`."""
        s = self.settings
        return {
            "poolclass": QueuePool,
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "pool_timeout": s.pool_timeout_seconds,
            "pool_recycle": s.pool_recycle_seconds,
            "pool_pre_ping": s.pool_pre_ping,
            "echo": s.echo,
            # Bound parameters may hold secrets; never log them, even with echo on.
            "hide_parameters": True,
            "connect_args": self.get_connect_args(),
        }

    def on_connect(self, dbapi_connection: Any) -> None:
        """Prepare each new DBAPI connection (pragmas, session variables). Default: nothing."""

    def setup_engine(self, engine: AsyncEngine) -> None:
        """Attach further event listeners to a new engine. Default: nothing."""

    def close(self) -> None:
        """Release what this connector holds across engines; called by ``dispose_engine()``. Default: nothing."""

    def in_transaction(self, dbapi_connection: Any) -> bool | None:
        """Whether ``dbapi_connection`` has a transaction open, if the driver knows without asking the server.

        When a connector answers (``True``/``False``, not ``None``), a connection
        returned to the pool is rolled back only if a transaction is open, instead
        of always: no ROLLBACK round trip after a unit of work that committed.
        ``dbapi_connection`` is SQLAlchemy's adapted connection
        (``.driver_connection`` is the driver's). Default: ``None``, don't know.
        """
        return None

    def is_closed(self, dbapi_connection: Any) -> bool:
        """Whether the driver already knows ``dbapi_connection`` is closed (the server hung up), without asking it.

        Pre-ping calls it for every connection taken from the pool: a closed one
        is replaced without a ping. It must not touch the network.
        ``dbapi_connection`` is SQLAlchemy's adapted connection
        (``.driver_connection`` is the driver's). Default: ``False``, not known.
        """
        return False

    def read_only_engine(self, engine: AsyncEngine) -> AsyncEngine:
        """An engine sharing ``engine``'s pool whose every transaction is ``READ ONLY``, on one snapshot.

        Read-only units of work run on it, on a replica or the primary, so a
        write among them fails on either, and two reads of one unit never see a
        commit made between them (a list and its count agree). Default:
        ``SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`` before each
        transaction (standard SQL; MySQL and MariaDB), one round trip.
        """
        read_only = engine.execution_options()  # its own events, the same pool
        self.execute_at_begin(read_only, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return read_only

    @staticmethod
    def execute_at_begin(engine: AsyncEngine, statement: str) -> None:
        """Send ``statement`` at the start of every transaction of ``engine``, before its first statement.

        For per-transaction settings (``SET TRANSACTION ...``, ``SET LOCAL ...``) in
        :meth:`read_only_engine` or :meth:`setup_engine`; it runs on the DBAPI
        cursor, since SQLAlchemy is still beginning the transaction. It costs
        a round trip per transaction, and every statement of ``engine`` then
        dispatches connection events.
        """

        def begin(connection: Connection) -> None:
            cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(statement)
            finally:
                cursor.close()

        event.listen(engine.sync_engine, "begin", begin)

    def is_transient(self, error: BaseException) -> bool:
        """Whether ``error`` (the driver's exception) means the whole transaction may simply be run again.

        :func:`~db_core.run_transaction` retries on it: a serialization
        failure or a deadlock, after which the server has rolled the
        transaction back. Never a constraint violation or a syntax error.
        Default: ``False``.
        """
        return False

    def is_missing_database(self, error: BaseException) -> bool:
        """Whether ``error`` (the driver's exception, on connecting) says the database does not exist on the server.

        ``db check`` and ``db migrate`` then say to create it, rather than
        repeat the driver's message. Default: ``False``.
        """
        return False

    def commits_implicitly(self, statement: str) -> bool:
        """Whether the server commits the open transaction before running ``statement`` (DDL on MySQL).

        :func:`~db_core.join_transaction` refuses such a statement: it would
        make a test's rolled-back transaction keep everything written before it.
        Default: ``False`` (DDL is transactional, as on PostgreSQL and SQLite).
        """
        return False

    async def replica_lag_seconds(self, connection: AsyncConnection) -> float | None:
        """How many seconds the replica ``connection`` is on lags behind its primary; ``None``: not known.

        Called by the background check of each configured replica; a replica
        lagging more than ``DB_REPLICA_MAX_LAG_SECONDS`` leaves the rotation.
        Default: ``None`` (lag is not checked, only reachability).
        """
        return None

    async def max_connections(self, connection: AsyncConnection) -> int | None:
        """How many connections the server accepts from ordinary users; ``None``: not known (the default).

        ``db check`` compares it with the connection budget of the pools.
        """
        return None

    def test_database_name(self, suffix: str = "") -> str:
        """The name of a throwaway database for a test run, beside :attr:`database`: ``test_<name><suffix>``.

        The pytest plugin (``db-pytest``) creates it, never touching the
        configured database; ``suffix`` tells parallel workers apart
        (``"_gw0"``). A name longer than servers accept (63 characters) is
        shortened with a hash, so two long names stay distinct.
        """
        name = f"test_{self.database}{suffix}"
        if len(name) <= _MAX_NAME_LENGTH:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        return f"{name[: _MAX_NAME_LENGTH - 9]}_{digest}"

    async def create_database(self) -> bool:
        """Create :attr:`database` on the server unless it exists; whether it did (for test databases).

        Default: not supported (:class:`~db_core.errors.ConnectorError`); a
        connector usually runs ``CREATE DATABASE`` over
        :meth:`server_connection`.
        """
        raise ConnectorError(f"the {self.name!r} connector cannot create databases (it has no create_database())")

    async def drop_database(self) -> None:
        """Drop :attr:`database` if it exists, even while idle connections to it remain (for test databases).

        Default: not supported (:class:`~db_core.errors.ConnectorError`).
        """
        raise ConnectorError(f"the {self.name!r} connector cannot drop databases (it has no drop_database())")

    @asynccontextmanager
    async def server_connection(self, database: str | None) -> AsyncIterator[AsyncConnection]:
        """An autocommit connection to ``database`` (``None``: none) on this server, with these credentials and TLS.

        For statements that cannot run inside the database they act on, such
        as ``CREATE DATABASE``; the connection is not pooled.
        """
        engine = create_async_engine(
            self.get_url()._replace(database=database),
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,
            connect_args=self.get_connect_args(),
        )
        try:
            async with engine.connect() as connection:
                yield connection
        finally:
            await engine.dispose()

    @contextmanager
    def shell(self, arguments: Sequence[str]) -> Iterator[ShellCommand]:
        """The backend's own client (``psql``, ``mariadb``, ``sqlite3``) for this database, for ``db shell``.

        ``arguments`` go to the client unchanged, after the connection's own.
        The password must never be on the command line, where every user of
        the machine can read it: give it through ``env`` or a file made with
        :meth:`private_file`, which this context removes again when the
        client has exited. Default: no shell (:class:`~db_core.errors.ConnectorError`).
        """
        raise ConnectorError(
            f"the {self.name!r} connector has no shell (it does not implement DBConnector.shell()); "
            "run its database's own client"
        )
        yield  # pragma: no cover  (a generator, for @contextmanager)

    @staticmethod
    @contextmanager
    def private_file(text: str, name: str = "secret") -> Iterator[Path]:
        """A file holding ``text`` (UTF-8) that only this OS user can read (0600, in a 0700 directory of its own).

        For a client that reads its password from a file; file and directory
        are deleted when the context exits, whatever the way.
        """
        directory = Path(tempfile.mkdtemp(prefix="db-shell-"))  # mode 0700
        try:
            path = directory / name
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
            yield path
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def create_engine(self) -> AsyncEngine:
        """Create a new engine with this connector's URL, arguments and hooks."""
        if self.settings.pgbouncer == "transaction" and not self.supports_pgbouncer:
            raise ConfigurationError(
                f"DB_PGBOUNCER=transaction is for PostgreSQL connectors; the {self.name!r} connector does not "
                "support it. Unset DB_PGBOUNCER"
            )
        if self.settings.ssl_mode != "disable":
            # Before the driver sees them: a driver (libpq) may use the files under its own default mode.
            self.check_ssl_files()
        url, args = self.get_url(), self.get_engine_args()
        own_pre_ping = False
        if issubclass(args.get("poolclass", QueuePool), QueuePool):
            # db_core's pool checks liveness without SQLAlchemy's ping at every checkout.
            own_pre_ping = bool(args.pop("pool_pre_ping", False))
        knows_transactions = type(self).in_transaction is not DBConnector.in_transaction
        if knows_transactions:
            # _reset rolls back, and only when a transaction is open.
            args["pool_reset_on_return"] = None
        try:
            engine = create_async_engine(url, **args)
        except (ArgumentError, ValueError, TypeError) as exc:
            # The dialect converts driver options itself (DB_OPTIONS, DB_URL's query): its
            # refusal of one is a setting's fault, said without the URL (which holds the password).
            reason = self.settings.mask_password(str(exc))
            error = ConfigurationError(
                f"DB_OPTIONS (or DB_URL's query options) {sorted(self.settings.options)} could not be used: "
                f"{type(exc).__name__}: {reason}. Fix or remove the option"
            )
        else:
            event.listen(engine.sync_engine, "handle_error", _note_lost_connection)
            if own_pre_ping:
                pool = engine.sync_engine.pool
                assert isinstance(pool, QueuePool)
                pool.check_liveness(self.is_closed, self.settings.pool_pre_ping_idle_seconds)
            if knows_transactions:
                event.listen(engine.sync_engine.pool, "reset", self._reset)
            if type(self).on_connect is not DBConnector.on_connect:
                event.listen(engine.sync_engine, "connect", lambda dbapi_conn, _record: self.on_connect(dbapi_conn))
            self.setup_engine(engine)
            return engine
        raise error

    def _reset(self, dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        """The pool's reset on return, less the ROLLBACK when the driver says there is nothing to roll back."""
        if not state.asyncio_safe or state.terminate_only or state.transaction_was_reset:
            return  # as SQLAlchemy's own reset: nothing that needs the event loop, nothing already done
        if self.in_transaction(dbapi_connection) is not False:
            dbapi_connection.rollback()

    def ssl_context(self) -> ssl.SSLContext | None:
        """An :class:`ssl.SSLContext` for ``DB_SSL_MODE`` and the ``DB_SSL_*`` files, or ``None``.

        ``None`` means "the driver's default" (``DB_SSL_MODE`` unset) or
        "no TLS" (``disable``); connectors tell the two apart themselves. A
        file that cannot be read or holds no usable certificate or key raises
        :class:`~db_core.errors.ConfigurationError` naming the variable and the path.
        """
        mode = self.settings.ssl_mode
        return None if mode in (None, "disable") else self._build_ssl_context(mode)

    def check_ssl_files(self) -> None:
        """Raise :class:`~db_core.errors.ConfigurationError` for a ``DB_SSL_*`` file that cannot be used.

        :meth:`create_engine` calls it unless ``DB_SSL_MODE=disable``, so a bad
        file is named before any connect, also when the mode is unset (a driver
        such as libpq uses the files under its own default mode).
        """
        s = self.settings
        if s.ssl_ca_file or s.ssl_cert_file or s.ssl_key_file:
            self._build_ssl_context("verify-full")

    def _build_ssl_context(self, mode: str) -> ssl.SSLContext:
        s = self.settings
        if s.ssl_key_file and not s.ssl_cert_file:
            raise ConfigurationError(
                f"DB_SSL_KEY_FILE={str(s.ssl_key_file)!r} is set without DB_SSL_CERT_FILE: "
                "set both for a client certificate, or neither"
            )
        ca_fix = "Set DB_SSL_CA_FILE to a PEM file of the CA certificate(s) that signed the server's certificate."
        try:
            context = ssl.create_default_context(cafile=str(s.ssl_ca_file) if s.ssl_ca_file else None)
        except OSError as exc:  # ssl.SSLError included: a file without a PEM certificate
            raise _file_error("DB_SSL_CA_FILE", s.ssl_ca_file, exc, ca_fix) from exc
        if mode in ("prefer", "require"):
            # libpq semantics: encrypted, server not verified.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif mode == "verify-ca":
            context.check_hostname = False
        if s.ssl_cert_file:
            _load_client_certificate(context, s.ssl_cert_file, s.ssl_key_file)
        return context

    def describe_tls_failure(self, error: ssl.SSLError) -> str:
        """What a failed TLS handshake means and which setting to change, for a connector's own error.

        Drivers report the reason only in a chained exception, or in OpenSSL's
        words; connectors put this sentence in the message users read.
        """
        s = self.settings
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = (error.verify_message or error.reason or "").rstrip(".")
            if error.verify_code in _HOST_MISMATCH:
                fix = (
                    "set DB_HOST to a name the certificate is issued for, "
                    "or DB_SSL_MODE=verify-ca to check the CA but not the name"
                )
            else:
                fix = (
                    "set DB_SSL_CA_FILE to the CA that signed the server's certificate "
                    f"(now {str(s.ssl_ca_file) if s.ssl_ca_file else 'unset'})"
                )
            return f"failed TLS certificate verification (DB_SSL_MODE={s.ssl_mode}): {reason}; {fix}"
        if error.reason == "WRONG_VERSION_NUMBER":
            # The bytes that came back were no TLS record: the server answered in plain text.
            return (
                f"TLS handshake failed (DB_SSL_MODE={s.ssl_mode}): the server did not answer in TLS; "
                "enable TLS on the server or check DB_HOST/DB_PORT, or set DB_SSL_MODE=prefer or disable"
            )
        return (
            f"TLS handshake failed (DB_SSL_MODE={s.ssl_mode}): {error.reason or error}; "
            "if the server asks for a client certificate, check DB_SSL_CERT_FILE and DB_SSL_KEY_FILE"
        )


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_HOST_MISMATCH = (62, 64)


LOST_CONNECTION_NOTE = (
    "db_core: the connection to the database was lost (the server closed or killed it, or the network "
    "dropped it); it has been discarded, and the next checkout gets a new connection"
)


def _note_lost_connection(context: ExceptionContext) -> None:
    # Drivers word a lost connection in many ways ("cannot switch to state 15", "connection is
    # closed", error 2013); the note says it plainly.
    if context.is_disconnect and context.sqlalchemy_exception is not None:
        context.sqlalchemy_exception.add_note(LOST_CONNECTION_NOTE)


def _load_client_certificate(context: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    fix = (
        "Set DB_SSL_CERT_FILE to the client certificate (PEM) and DB_SSL_KEY_FILE to its private key "
        "(unencrypted; or leave DB_SSL_KEY_FILE unset when the certificate file holds the key)."
    )
    for variable, path in (("DB_SSL_CERT_FILE", cert), ("DB_SSL_KEY_FILE", key)):
        if path is not None:
            try:
                path.open("rb").close()
            except OSError as exc:
                raise _file_error(variable, path, exc, fix) from exc
    shown = f"DB_SSL_CERT_FILE={str(cert)!r}" + (f" with DB_SSL_KEY_FILE={str(key)!r}" if key else "")

    def passphrase() -> str:
        # Without this callback OpenSSL would prompt on the terminal, blocking the event loop.
        raise ConfigurationError(
            f"{shown}: the private key is encrypted with a passphrase, which cannot be given. "
            "Store the client key unencrypted, readable only by the service's user."
        )

    try:
        context.load_cert_chain(str(cert), str(key) if key else None, password=passphrase)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"{shown} cannot be used: no certificate and matching private key could be loaded "
            f"({_ssl_reason(exc)}). {fix}"
        ) from exc


def _ssl_reason(exc: ssl.SSLError) -> str:
    return f"{exc.library}: {exc.reason}" if getattr(exc, "library", None) else str(getattr(exc, "reason", None) or exc)


def _file_error(variable: str, path: Path | None, exc: OSError, fix: str) -> ConfigurationError:
    """A ``ConfigurationError`` for a TLS file that could not be used; it shows the path, never the file's text."""
    if isinstance(exc, ssl.SSLError):
        reason = f"it holds no usable PEM certificate ({_ssl_reason(exc)})"
    else:
        reason = exc.strerror or type(exc).__name__
    return ConfigurationError(f"{variable}={str(path)!r} cannot be used: {reason}. {fix}")
