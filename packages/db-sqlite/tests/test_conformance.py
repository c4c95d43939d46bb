"""db-sqlite against db_core's conformance kit, on a database file of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_core import DatabaseSettings
from db_core.testing import Capabilities, ConnectorSuite


class TestSQLiteConformance(ConnectorSuite):
    connector = "sqlite"
    default_port = None
    capabilities = Capabilities(network=False, savepoints=True, statement_timeout=True, tls=False, create_database=True)
    # SQLite has no sleep: a recursive count to a billion runs for minutes.
    slow_query = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c"
    )

    @pytest.fixture
    def db_settings(self, tmp_path: Path) -> DatabaseSettings:
        return DatabaseSettings(type="sqlite", name=str(tmp_path / "kit.db"), _env_file=None)
