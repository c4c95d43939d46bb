"""db_mysql: the MySQL and MariaDB connector for db_core, over aiomysql (``DB_TYPE=mysql``)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import aiomysql
from sqlalchemy.engine import URL

from db_core import DBConnector
from db_mysql.__about__ import __version__

__all__ = ["MySQLConnector", "__version__"]


class MySQLConnector(DBConnector):
    """MySQL and MariaDB through aiomysql; also answers to ``mariadb``.

    Connections use ``utf8mb4`` and refuse ``LOAD DATA LOCAL INFILE``.
    """

    name = "mysql"
    drivername = "mysql+aiomysql"
    default_port = 3306

    def get_url(self) -> URL:
        """The URL, with the password prepared for aiomysql (see below)."""
        url = super().get_url()
        if url.password:
            # aiomysql encodes the password as latin-1, while servers hash the UTF-8
            # bytes; handing it the UTF-8 bytes as latin-1 characters sends those bytes.
            url = url.set(password=str(url.password).encode("utf-8").decode("latin-1"))
        return url

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
        args["async_creator_fn"] = functools.partial(_connect_within, s.connect_timeout_seconds, require_tls)
        context = self.ssl_context()
        if context is not None:
            args["ssl"] = context
        return args


async def _connect_within(seconds: float, require_tls: bool, *args: Any, **kwargs: Any) -> Any:
    """Connect like ``aiomysql.connect``, the whole handshake bounded by ``seconds``.

    aiomysql closes its socket when connecting fails with an ``Exception`` but
    not when the attempt is cancelled (a request timeout, a client gone), which
    leaks the socket; here the connection is closed on any way out. And where
    aiomysql quietly goes on in plain text when the server offers no TLS, a
    connection that must be encrypted is refused.
    """
    connection = aiomysql.Connection(*args, **kwargs)
    try:
        await asyncio.wait_for(connection._connect(), seconds)
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
