"""db_dummy_connector: a third-party connector for db_core (``DB_TYPE=dummy``), used by the packaging tests.

It runs on the embedded SQLite through aiosqlite and imports nothing from the
project but ``db_core``, as a connector published by someone else would.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from db_core import DBConnector

__all__ = ["DummyConnector"]


class DummyConnector(DBConnector):
    """SQLite through aiosqlite; ``DB_NAME`` is a file path (default ``dummy.db``)."""

    name = "dummy"
    drivername = "sqlite+aiosqlite"
    api_version = "1.0"
    default_port = None
    default_database = "dummy.db"

    def get_url(self) -> URL:
        """A file URL with an absolute path (SQLite has no host, port or user)."""
        return URL.create(self.drivername, database=str(Path(self.database).expanduser().absolute()))
