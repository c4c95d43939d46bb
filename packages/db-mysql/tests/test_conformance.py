"""db-mysql against db_core's conformance kit, on this run's database of the shared MariaDB server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from db_core import DatabaseSettings
from db_core.testing import Capabilities, ConnectorSuite
from dbtests.servers import Server, run_coroutine

PASSWORD = "kit-S3cret-pw:@/é"


@pytest.fixture(scope="module")
def kit_user(mysql_server: Server) -> Iterator[str]:
    """A user of its own with a password (root has none), to look for in the logs."""
    name = f"kit_{uuid.uuid4().hex[:8]}"
    quoted = PASSWORD.replace("'", "''")
    run_coroutine(
        mysql_server.admin(
            f"CREATE USER '{name}'@'%' IDENTIFIED BY '{quoted}'",
            f"GRANT ALL ON {mysql_server.database}.* TO '{name}'@'%'",
            # The kit's throwaway test databases (test_<database>_kit_...).
            f"GRANT ALL ON `test_{mysql_server.database}%`.* TO '{name}'@'%'",
        )
    )
    yield name
    run_coroutine(mysql_server.admin(f"DROP USER IF EXISTS '{name}'@'%'"))


class TestMySQLConformance(ConnectorSuite):
    connector = "mysql"
    default_port = 3306
    capabilities = Capabilities(savepoints=True, statement_timeout=True, tls=True, create_database=True)
    slow_query = "SELECT SLEEP(30)"
    # MariaDB shows the application name (program_name) only with performance_schema on.

    @pytest.fixture
    def db_settings(self, mysql_server: Server, kit_user: str) -> DatabaseSettings:
        return mysql_server.settings(user=kit_user, password=PASSWORD)
