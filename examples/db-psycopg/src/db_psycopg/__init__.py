"""db_psycopg: a PostgreSQL connector for db_core over psycopg 3 and libpq (``DB_TYPE=psycopg``)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db_core import ConfigurationError, DatabaseSettings, DBConnector
from db_psycopg.__about__ import __version__
from db_psycopg._errors import explain_connect_error
from db_psycopg.settings import PREPARE_THRESHOLD_FIX, PsycopgSettings, parse_prepare_threshold

__all__ = ["PsycopgConnector", "PsycopgSettings", "__version__"]


class PsycopgConnector(DBConnector):
    """PostgreSQL through psycopg 3's ``AsyncConnection``, libpq doing the connecting and TLS.

    Settings become libpq connection parameters: ``DB_CONNECT_TIMEOUT_SECONDS``
    ``connect_timeout`` (and a bound on the whole connect), ``DB_APPLICATION_NAME``
    ``application_name``, ``DB_STATEMENT_TIMEOUT_SECONDS`` ``options=-c statement_timeout``,
    ``DB_SSL_MODE`` ``sslmode`` and ``DB_SSL_*_FILE`` ``sslrootcert``/``sslcert``/``sslkey``.
    ``DB_PSYCOPG_PREPARE_THRESHOLD`` is psycopg's ``prepare_threshold``.
    """

    name = "psycopg"
    drivername = "postgresql+psycopg"
    api_version = "1.0"
    default_port = 5432

    def __init__(self, settings: DatabaseSettings) -> None:
        super().__init__(settings)
        _check_options(settings.options)
        self.psycopg_settings = PsycopgSettings()
        self._prepare_threshold = self._resolve_prepare_threshold()

    @property
    def prepare_threshold(self) -> int | None:
        """psycopg's ``prepare_threshold`` for new connections (``None``: never prepare)."""
        return self._prepare_threshold[1]

    def _resolve_prepare_threshold(self) -> tuple[bool, int | None]:
        """(given, value): from ``DB_PSYCOPG_PREPARE_THRESHOLD``, or ``prepare_threshold`` in ``DB_OPTIONS``.

        The option lets code that builds ``DatabaseSettings`` itself (``configure()``) set it too.
        """
        env = self.psycopg_settings
        raw = self.settings.options.get("prepare_threshold")
        if raw is None:
            return env.prepare_threshold_given, env.prepare_threshold
        try:
            option = parse_prepare_threshold(raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"DB_OPTIONS (or DB_URL's query) prepare_threshold={raw!r} is invalid: {exc}. "
                f"Set it to {PREPARE_THRESHOLD_FIX}."
            ) from None
        if env.prepare_threshold_given and env.prepare_threshold != option:
            raise ConfigurationError(
                f"DB_PSYCOPG_PREPARE_THRESHOLD={_shown(env.prepare_threshold)} and DB_OPTIONS (or DB_URL's query) "
                f"prepare_threshold={raw!r} disagree: set the threshold in one place only"
            )
        return True, option

    def get_url(self) -> URL:
        """The URL of :class:`~db_core.DBConnector`, less ``prepare_threshold`` (passed as a number instead)."""
        return super().get_url().difference_update_query(["prepare_threshold"])

    def get_connect_args(self) -> dict[str, Any]:
        """libpq parameters for the connect timeout, ``application_name``, ``statement_timeout`` and TLS.

        db_core has checked the ``DB_SSL_*_FILE`` files by then (``check_ssl_files``).
        """
        s = self.settings
        # libpq counts whole seconds (and takes anything under 2 as 2); the exact bound is _connect's.
        args: dict[str, Any] = {"connect_timeout": max(1, math.ceil(s.connect_timeout_seconds))}
        if s.application_name:
            args["application_name"] = s.application_name
        if s.statement_timeout_seconds is not None:
            # The server stops the statement and the connection stays usable. Appended to any
            # "options" of DB_OPTIONS, which the connect arguments would otherwise replace.
            milliseconds = max(1, round(s.statement_timeout_seconds * 1000))
            own = s.options.get("options", "").strip()
            args["options"] = f"{own} -c statement_timeout={milliseconds}".strip()
        args.update(self._tls_args())
        set_here, threshold = self._prepare_threshold
        if set_here:
            args["prepare_threshold"] = threshold
        args["async_creator_fn"] = self._connect
        return args

    def _tls_args(self) -> dict[str, Any]:
        """``DB_SSL_MODE`` and the files, 1:1 as libpq's ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``."""
        s = self.settings
        if s.ssl_mode == "disable":
            return {"sslmode": "disable"}
        if s.ssl_mode is None and not (s.ssl_ca_file or s.ssl_cert_file or s.ssl_key_file):
            return {}  # libpq's default (prefer, or PGSSLMODE)
        # libpq reads the files itself, but reports an unusable one without naming the setting, and
        # would prompt on the terminal for an encrypted key: db_core's create_engine() has checked
        # them already, also with DB_SSL_MODE unset (libpq's default, prefer, still uses them).
        args: dict[str, Any] = {}
        if s.ssl_mode is not None:
            args["sslmode"] = s.ssl_mode
        if s.ssl_ca_file:
            args["sslrootcert"] = str(s.ssl_ca_file)
        if s.ssl_cert_file:
            args["sslcert"] = str(s.ssl_cert_file)
            # libpq would look for ~/.postgresql/postgresql.key, not in the certificate file.
            args["sslkey"] = str(s.ssl_key_file or s.ssl_cert_file)
        return args

    async def _connect(self, *args: Any, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        """psycopg's connect within ``DB_CONNECT_TIMEOUT_SECONDS``, its errors naming the setting to change.

        libpq's own timeout counts whole seconds, at least 2, per address tried;
        ``asyncio.timeout`` bounds the whole connect to the exact setting.
        """
        s = self.settings
        server = f"{s.host}:{self.port}"
        try:
            async with asyncio.timeout(s.connect_timeout_seconds):
                return await psycopg.AsyncConnection.connect(*args, **kwargs)
        except TimeoutError:
            error: Exception = self._timeout_error(server)
        except psycopg.errors.ConnectionTimeout:
            error = self._timeout_error(server)
        except psycopg.Error as exc:
            explained = explain_connect_error(exc, s)
            if explained is exc:
                raise
            error = explained
        raise error

    def _timeout_error(self, server: str) -> TimeoutError:
        # Raised without context: the cancelled connect's traceback says nothing more.
        return TimeoutError(
            f"no answer from the PostgreSQL server at {server} within "
            f"DB_CONNECT_TIMEOUT_SECONDS={self.settings.connect_timeout_seconds:g}"
        )

    async def create_database(self) -> bool:
        """``CREATE DATABASE`` from the ``postgres`` maintenance database, unless it exists (db-pytest)."""
        async with self.server_connection("postgres") as connection:
            if await connection.scalar(_DATABASE_EXISTS, {"name": self.database}):
                return False
            await connection.exec_driver_sql(f"CREATE DATABASE {_quoted(connection, self.database)}")
            return True

    async def drop_database(self) -> None:
        """``DROP DATABASE ... WITH (FORCE)``: idle connections to it do not block it."""
        async with self.server_connection("postgres") as connection:
            name = _quoted(connection, self.database)
            await connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def setup_engine(self, engine: AsyncEngine) -> None:
        """Name the setting to change on the errors of a statement timeout and of lost prepared statements."""
        event.listen(engine.sync_engine, "handle_error", self._note_setting)

    def _note_setting(self, context: ExceptionContext) -> None:
        exc, error = context.original_exception, context.sqlalchemy_exception
        if error is None:
            return
        seconds = self.settings.statement_timeout_seconds
        if isinstance(exc, psycopg.errors.QueryCanceled) and seconds is not None and "statement timeout" in str(exc):
            error.add_note(
                f"db_psycopg: the server stopped the statement after DB_STATEMENT_TIMEOUT_SECONDS={seconds:g} "
                "(its statement_timeout); the connection stays usable. Make the statement faster, or raise "
                "or unset DB_STATEMENT_TIMEOUT_SECONDS"
            )
        elif (
            isinstance(exc, (psycopg.errors.DuplicatePreparedStatement, psycopg.errors.InvalidSqlStatementName))
            and '"_pg3_' in str(exc)
            and self.prepare_threshold is not None
        ):
            # psycopg's own statement names: a pooler in transaction mode moved the session
            # to another server connection, where they are unknown or taken.
            error.add_note(
                "db_psycopg: psycopg's prepared statements went missing or clashed between statements, as behind "
                "PgBouncer in transaction mode (DB_PSYCOPG_PREPARE_THRESHOLD="
                f"{_shown(self.prepare_threshold)}): set DB_PSYCOPG_PREPARE_THRESHOLD=none, or max_prepared_statements "
                "in PgBouncer 1.21+"
            )


def _check_options(options: dict[str, str]) -> None:
    """Refuse a ``DB_OPTIONS`` key that is no libpq parameter now, rather than at every connect.

    psycopg's own arguments (``autocommit``, ``row_factory``, ...) are refused
    too: from the URL query they would arrive as text, and ``"false"`` is true.
    """
    for key, value in options.items():
        if key == "prepare_threshold":
            continue
        try:
            psycopg.conninfo.make_conninfo("", **{key: value})
        except psycopg.ProgrammingError as exc:
            reason = str(exc).strip().removeprefix("couldn't parse connection string: ").rstrip(".")
            raise ConfigurationError(
                f"DB_OPTIONS (or DB_URL's query) {key}={value!r} cannot be used: {reason}. DB_OPTIONS takes libpq "
                "connection parameters (sslcompression, target_session_attrs, options, ...) and prepare_threshold; "
                "correct or remove it"
            ) from None


_DATABASE_EXISTS = text("SELECT 1 FROM pg_database WHERE datname = :name")


def _quoted(connection: AsyncConnection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def _shown(threshold: int | None) -> str:
    return "none" if threshold is None else str(threshold)
