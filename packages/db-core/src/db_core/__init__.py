"""db_core: a production-grade async SQLAlchemy database layer.

Settings from ``DB_*`` variables, backends found through entry points, one
engine per event loop, and a unit of work that never loses committed data
nor leaks a connection.
"""

from db_core.__about__ import __version__
from db_core.connector import API_VERSION, DBConnector, ShellCommand
from db_core.engine import (
    AsyncSessionMaker,
    configure,
    dispose_engine,
    get_connector_instance,
    get_engine,
    get_sessionmaker,
    get_settings,
    has_replicas,
    join_transaction,
)
from db_core.errors import (
    AmbiguousConnectorError,
    ConcurrentUseError,
    ConfigurationError,
    ConnectorError,
    ConnectorLoadError,
    ConnectorNotFoundError,
    DBError,
    MigrationError,
    NoReplicaAvailableError,
    PoolExhaustedError,
    UnitOfWorkError,
    UnknownDatabaseError,
)
from db_core.health import HealthResult, PingResult, health, ping
from db_core.pool import POOL_STATS_KEYS, pool_stats
from db_core.registry import (
    ENTRY_POINT_GROUP,
    ConnectorInfo,
    available_connectors,
    get_connector,
    register_connector,
    resolve_connector,
    unregister_connector,
)
from db_core.retry import run_transaction
from db_core.routing import READ_ONLY_NOTE
from db_core.session import DBSession
from db_core.settings import DEFAULT_DATABASE, DatabaseSettings, ReplicaFallback, SSLMode
from db_core.unit_of_work import UnitOfWork, close_session, in_unit_of_work

__all__ = [
    "API_VERSION",
    "DEFAULT_DATABASE",
    "ENTRY_POINT_GROUP",
    "AmbiguousConnectorError",
    "AsyncSessionMaker",
    "ConcurrentUseError",
    "ConfigurationError",
    "ConnectorError",
    "ConnectorInfo",
    "ConnectorLoadError",
    "ConnectorNotFoundError",
    "DBConnector",
    "DBError",
    "DBSession",
    "DatabaseSettings",
    "POOL_STATS_KEYS",
    "HealthResult",
    "MigrationError",
    "PingResult",
    "READ_ONLY_NOTE",
    "NoReplicaAvailableError",
    "PoolExhaustedError",
    "ReplicaFallback",
    "SSLMode",
    "ShellCommand",
    "UnitOfWork",
    "UnitOfWorkError",
    "UnknownDatabaseError",
    "__version__",
    "available_connectors",
    "close_session",
    "configure",
    "dispose_engine",
    "get_connector",
    "get_connector_instance",
    "get_engine",
    "get_sessionmaker",
    "get_settings",
    "has_replicas",
    "health",
    "in_unit_of_work",
    "join_transaction",
    "ping",
    "pool_stats",
    "register_connector",
    "resolve_connector",
    "run_transaction",
    "unregister_connector",
]
