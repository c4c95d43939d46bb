"""db-postgres against db_core's conformance kit, on this run's database of the shared PostgreSQL server."""

from __future__ import annotations

import pytest

from db_core import DatabaseSettings
from db_core.testing import Capabilities, ConnectorSuite
from dbtests.servers import Server


class TestPostgresConformance(ConnectorSuite):
    connector = "postgres"
    default_port = 5432
    capabilities = Capabilities(savepoints=True, statement_timeout=True, tls=True, create_database=True)
    slow_query = "SELECT pg_sleep(30)"
    application_name_query = "SELECT current_setting('application_name')"

    @pytest.fixture
    def db_settings(self, postgres_server: Server) -> DatabaseSettings:
        # Trust authentication ignores it; it is there to be looked for in the logs.
        return postgres_server.settings(password="kit-S3cret-pw")
