"""db_core.testing: the conformance kit for connectors (``pip install "db-core[testing]"``).

A connector proves it keeps db_core's connector contract by running this
pytest suite against a real database. In the connector's own tests::

    from db_core.testing import Capabilities, ConnectorSuite

    class TestMyConnector(ConnectorSuite):
        connector = "mydb"          # its entry point name, the DB_TYPE users set
        default_port = 5555         # what it connects to when DB_PORT is unset
        capabilities = Capabilities(savepoints=True, statement_timeout=True, tls=True)
        slow_query = "SELECT pg_sleep(30)"   # a statement that runs for seconds

The database comes from the usual ``DB_*`` variables (``DB_URL``, or
``DB_HOST``, ``DB_PORT``, ``DB_USER``...); ``DB_TYPE`` defaults to
``connector``. Without a reachable server the server tests skip, saying why;
with ``CI=true`` or ``DB_TEST_REQUIRE_SERVERS=1`` a missing server fails them
instead. Nothing here is loaded into a pytest run that does not import it.
"""

from __future__ import annotations

try:
    import pytest
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('db_core.testing needs pytest: pip install "db-core[testing]"') from exc

# Before the suite is imported: its failed asserts then say what differed, as in the user's own tests.
pytest.register_assert_rewrite("db_core.testing.suite")

from db_core.testing.relay import Relay, TurnCounter, free_port  # noqa: E402
from db_core.testing.suite import Capabilities, ConnectorSuite, servers_required, unavailable  # noqa: E402

__all__ = ["Capabilities", "ConnectorSuite", "Relay", "TurnCounter", "free_port", "servers_required", "unavailable"]
