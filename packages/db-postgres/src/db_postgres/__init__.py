"""db_postgres: the PostgreSQL connector for db_core, over asyncpg (``DB_TYPE=postgres``)."""

from __future__ import annotations

from typing import Any

from db_core import DBConnector
from db_postgres.__about__ import __version__

__all__ = ["PostgresConnector", "__version__"]


class PostgresConnector(DBConnector):
    """PostgreSQL through asyncpg; also answers to ``postgresql`` and ``pg``."""

    name = "postgres"
    drivername = "postgresql+asyncpg"
    default_port = 5432

    def get_connect_args(self) -> dict[str, Any]:
        """The connect timeout, TLS and ``application_name`` for asyncpg."""
        s = self.settings
        args: dict[str, Any] = {"timeout": s.connect_timeout_seconds}
        if s.application_name:
            args["server_settings"] = {"application_name": s.application_name}
        if s.ssl_mode == "disable":
            args["ssl"] = False
        elif s.ssl_mode == "prefer":
            # asyncpg's own "prefer" falls back to plain text when the server has no TLS, as libpq does.
            args["ssl"] = "prefer"
        elif s.ssl_mode is not None:
            args["ssl"] = self.ssl_context()
        return args
