"""db-psycopg against db_core's conformance kit.

The database is the one the ``DB_*`` variables name (``DB_TYPE`` is psycopg
whatever it says); without one these tests skip, and with ``CI=true`` or
``DB_TEST_REQUIRE_SERVERS=1`` they fail.
"""

from __future__ import annotations

from db_core.testing import Capabilities, ConnectorSuite


class TestPsycopgConformance(ConnectorSuite):
    connector = "psycopg"
    default_port = 5432
    capabilities = Capabilities(savepoints=True, statement_timeout=True, tls=True, create_database=True)
    slow_query = "SELECT pg_sleep(30)"
    application_name_query = "SELECT current_setting('application_name')"
