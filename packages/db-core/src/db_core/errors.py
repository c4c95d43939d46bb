"""Every error db_core raises on purpose, in one small hierarchy.

Catch :class:`DBError` to handle all of them; each message says what was wrong
and how to fix it, and never contains a password.
"""

from __future__ import annotations

import re

from sqlalchemy import exc as sa_exc

__all__ = [
    "AmbiguousConnectorError",
    "ConfigurationError",
    "ConnectorError",
    "ConnectorLoadError",
    "ConnectorNotFoundError",
    "ConcurrentUseError",
    "DBError",
    "MigrationError",
    "NoReplicaAvailableError",
    "PoolExhaustedError",
    "UnitOfWorkError",
    "UnknownDatabaseError",
    "describe_cause",
]


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error behind ``exc`` (SQLAlchemy's ``DBAPIError.orig``), else ``exc`` itself."""
    return exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc


def describe_cause(exc: BaseException) -> str:
    """``Type: first line`` of the driver's own error behind ``exc``, without SQLAlchemy's wrapping.

    asyncpg's adapter puts the class name before the message; it is removed.
    For logs and one-line reports (``db check``, replica states, retries).
    """
    cause = driver_error(exc)
    text = re.sub(r"<class '[\w.]+'>: ", "", str(cause)).strip() or type(cause).__name__
    return f"{type(cause).__name__}: {text.splitlines()[0]}"


class DBError(Exception):
    """Base class of all errors raised by db_core and its connectors."""


class ConfigurationError(DBError, ValueError):
    """A setting is missing or invalid; the message names the variable and the fix."""


class UnknownDatabaseError(ConfigurationError, LookupError):
    """A database name that no ``DB_DATABASES__<NAME>__*`` setting configures."""

    def __init__(self, name: str, configured: tuple[str, ...]) -> None:
        self.name = name
        self.configured = configured
        super().__init__(
            f"no database named {name!r} is configured (configured: {', '.join(configured)}). "
            f"Configure it with DB_DATABASES__{name.upper()}__URL (or its other DB_DATABASES__{name.upper()}__* "
            "settings), or use one of the configured names"
        )


class NoReplicaAvailableError(DBError):
    """A read-only unit of work found no usable replica, and ``DB_REPLICA_FALLBACK=error`` forbids the primary."""

    def __init__(self, database: str, states: list[str]) -> None:
        self.database = database
        self.states = states
        super().__init__(
            f"no read replica of database {database!r} is usable ({'; '.join(states)}), and "
            "DB_REPLICA_FALLBACK=error forbids reading from the primary. Set DB_REPLICA_FALLBACK=primary "
            "to read from the primary meanwhile"
        )


class ConnectorError(DBError):
    """A connector could not be found or used."""


class ConnectorNotFoundError(ConnectorError, LookupError):
    """No installed connector answers to the requested ``DB_TYPE``."""

    def __init__(self, name: str, installed: list[str], install_hint: str | None, *, defaulted: bool = False) -> None:
        self.name = name
        self.installed = installed
        self.install_hint = install_hint
        listed = ", ".join(installed) if installed else "none"
        subject = f"DB_TYPE is not set, so the default {name!r} was tried" if defaulted else f"DB_TYPE={name!r}"
        message = f"{subject}: no installed connector has this name (installed: {listed})."
        if install_hint:
            message += f" Install it with: {install_hint}"
        else:
            message += " Set DB_TYPE to one of the installed connectors, or install the distribution that provides it."
        super().__init__(message)


class ConnectorLoadError(ConnectorError, ImportError):
    """A connector is installed but its entry point failed to load or is incompatible."""

    def __init__(self, name: str, distribution: str, reason: str) -> None:
        self.name = name
        self.distribution = distribution
        self.reason = reason
        super().__init__(f"connector {name!r} from {distribution} could not be loaded: {reason}")


class AmbiguousConnectorError(ConnectorError, LookupError):
    """Two installed distributions claim the same ``DB_TYPE``; neither is picked silently."""

    def __init__(self, name: str, candidates: list[str]) -> None:
        self.name = name
        self.candidates = candidates
        super().__init__(
            f"DB_TYPE={name!r} is claimed by {len(candidates)} installed distributions: {' and '.join(candidates)}. "
            "Uninstall all but one of them, or pick one in code with "
            f"db_core.register_connector({name!r}, <the connector class>)"
        )


class MigrationError(DBError):
    """A migration cannot run as asked (no ``alembic.ini``, no Alembic, ...); the message names the fix."""


class UnitOfWorkError(DBError, RuntimeError):
    """A :class:`~db_core.UnitOfWork` was used in a way it does not support."""


class PoolExhaustedError(DBError, sa_exc.TimeoutError):
    """No pooled connection came free within ``DB_POOL_TIMEOUT_SECONDS``.

    A subclass of :class:`sqlalchemy.exc.TimeoutError`, so handlers written for
    SQLAlchemy's pool timeout still catch it; ``db_fastapi`` answers it with
    ``503 Service Unavailable`` and ``Retry-After``.
    """

    def __init__(self, pool_size: int, max_overflow: int, timeout: float) -> None:
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.timeout = timeout
        super().__init__(
            f"no free database connection within DB_POOL_TIMEOUT_SECONDS={timeout:g}: all {pool_size + max_overflow} "
            f"connections (DB_POOL_SIZE={pool_size} + DB_MAX_OVERFLOW={max_overflow}) are in use. Release "
            "connections sooner (close sessions, keep transactions short, no slow calls inside a unit of work) "
            "or raise DB_POOL_SIZE / DB_MAX_OVERFLOW"
        )


class ConcurrentUseError(DBError, sa_exc.InvalidRequestError):
    """One session was used by two tasks at the same time.

    A session (and its connection) serves one task at a time; each concurrent
    task needs its own, e.g. its own ``async with UnitOfWork()``.
    """
