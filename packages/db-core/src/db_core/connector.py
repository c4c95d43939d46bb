"""``DBConnector``: the interface a backend implements to plug into db_core.

A connector is a class registered under the entry-point group
``db_core.connectors``. It turns :class:`~db_core.settings.DatabaseSettings`
into a SQLAlchemy URL and engine arguments, and may prepare every new
connection. Everything else (pooling per event loop, units of work, FastAPI)
is db_core's job, so a connector stays small.
"""

from __future__ import annotations

import ssl
from typing import Any, ClassVar

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db_core.settings import DatabaseSettings

__all__ = ["API_VERSION", "DBConnector"]

API_VERSION = 1
"""The connector interface version this db_core implements.

A connector declares the version it was written for in
:attr:`DBConnector.api_version`; the registry refuses a connector whose version
differs, naming its distribution, instead of failing later in a query.
"""


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

    api_version: ClassVar[int] = API_VERSION
    """The :data:`API_VERSION` this connector implements."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings

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

    def create_engine(self) -> AsyncEngine:
        """Create a new engine with this connector's URL, arguments and hooks."""
        engine = create_async_engine(self.get_url(), **self.get_engine_args())
        if type(self).on_connect is not DBConnector.on_connect:
            event.listen(engine.sync_engine, "connect", lambda dbapi_conn, _record: self.on_connect(dbapi_conn))
        self.setup_engine(engine)
        return engine

    def ssl_context(self) -> ssl.SSLContext | None:
        """An :class:`ssl.SSLContext` for ``DB_SSL_MODE`` and the ``DB_SSL_*`` files, or ``None``.

        ``None`` means "the driver's default" (``DB_SSL_MODE`` unset) or
        "no TLS" (``disable``); connectors tell the two apart themselves.
        """
        s = self.settings
        if s.ssl_mode in (None, "disable"):
            return None
        context = ssl.create_default_context(cafile=str(s.ssl_ca_file) if s.ssl_ca_file else None)
        if s.ssl_mode in ("prefer", "require"):
            # libpq semantics: encrypted, server not verified.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif s.ssl_mode == "verify-ca":
            context.check_hostname = False
        if s.ssl_cert_file:
            context.load_cert_chain(str(s.ssl_cert_file), str(s.ssl_key_file) if s.ssl_key_file else None)
        return context
