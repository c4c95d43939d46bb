"""``ping()``: is the database there, which server is it, how far away; ``health()``: never raising, never late."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db_core.engine import get_connector_instance, get_engine
from db_core.errors import describe_cause
from db_core.pool import pool_stats

__all__ = ["HealthResult", "PingResult", "health", "ping"]

logger = logging.getLogger("db_core")

# Checks that outlived their health() call, still cleaning up (returning or invalidating a
# connection): referenced here so the garbage collector does not destroy them mid-way.
_abandoned: set[asyncio.Task[float]] = set()


@dataclass(frozen=True)
class PingResult:
    """What :func:`ping` found."""

    backend: str
    """The SQLAlchemy dialect name, e.g. ``postgresql``."""
    server_version: str
    """The server's version, e.g. ``15.20``."""
    round_trip_seconds: float
    """The time one ``SELECT 1`` took on an open connection."""


async def ping(engine: AsyncEngine | None = None) -> PingResult:
    """Connect through ``engine`` (default: :func:`~db_core.get_engine`) and time one ``SELECT 1``.

    Raises whatever the driver raises when the server cannot be reached; the
    connection goes back to the pool in every case.
    """
    engine = engine if engine is not None else get_engine()
    async with engine.connect() as connection:
        started = time.perf_counter()
        await connection.execute(text("SELECT 1"))
        elapsed = time.perf_counter() - started
        version = connection.dialect.server_version_info or ()
    return PingResult(engine.dialect.name, ".".join(str(part) for part in version), elapsed)


@dataclass(frozen=True)
class HealthResult:
    """What :func:`health` found."""

    ok: bool
    """Whether a pooled connection answered ``SELECT 1`` within the timeout."""
    database: str
    """The database checked: ``default`` for the ``DB_*`` one, else its name."""
    backend: str
    """The connector's name, e.g. ``postgres``."""
    round_trip_seconds: float | None
    """The time ``SELECT 1`` took on the connection; ``None`` when the check failed."""
    pool: dict[str, int | float] = field(default_factory=dict)
    """:func:`~db_core.pool_stats` right after the check."""
    error: str | None = None
    """Why the check failed, in one line: the driver's error type and first line, the password masked,
    or the timeout and the pool's state. Never a URL, a password or a traceback. ``None`` when ``ok``."""


async def health(database: str | None = None, *, timeout_seconds: float | None = None) -> HealthResult:
    """Check ``database`` (default: the ``DB_*`` one) the way a request would: a pooled connection and ``SELECT 1``.

    Answers within ``timeout_seconds`` (default: ``DB_HEALTH_TIMEOUT_SECONDS``
    of that database) whatever happens: when the server is stopped, silent or
    slow, and when the pool is exhausted, where the check waits its turn like
    any request but only until the timeout, not ``DB_POOL_TIMEOUT_SECONDS``.
    Never raises (but on cancellation): a failure is ``ok=False`` with a short
    :attr:`HealthResult.error`.

    The check goes through the pool rather than a connection of its own on
    purpose: an exhausted pool is what makes requests fail, so it must make
    the check fail too, and a connection of its own would go beyond the
    connection budget (``DB_POOL_SIZE + DB_MAX_OVERFLOW`` per process) that
    ``db check`` compares with the server's ``max_connections``. A check that
    runs out of time is cancelled and left to clean up in the background
    (its connection is invalidated if it was in use), so a silent server
    cannot hold the answer back.
    """
    started = time.monotonic()
    name = database or "default"
    backend = "unknown"
    try:
        connector = get_connector_instance(database)
        backend, settings = connector.name, connector.settings
        timeout = timeout_seconds if timeout_seconds is not None else settings.health_timeout_seconds
        engine = get_engine(database)
    except Exception as exc:  # unusable settings: reported, not raised, and without the values
        return HealthResult(False, name, backend, None, {}, describe_cause(exc))
    check = asyncio.ensure_future(_round_trip(engine))
    try:
        done, _ = await asyncio.wait({check}, timeout=max(timeout - (time.monotonic() - started), 0))
    except BaseException:
        _abandon(check)
        raise
    if not done:
        # Taken before the check leaves the line: waiting for a free connection, it is one of the waiters.
        stats = _stats(database)
        _abandon(check)
        waiting = int(stats.get("waiting", 0))
        if waiting:
            error = (
                f"no free connection within {timeout:g} s: all {stats.get('checked_out', 0)} connections are in use, "
                f"{waiting - 1} other tasks waiting"
            )
            stats["waiting"] = waiting - 1
        else:
            error = f"the database did not answer within {timeout:g} s"
        return HealthResult(False, name, backend, None, stats, error)
    failure = check.exception()
    if failure is not None:
        error = settings.mask_password(describe_cause(failure))
        return HealthResult(False, name, backend, None, _stats(database), error)
    return HealthResult(True, name, backend, check.result(), _stats(database), None)


async def _round_trip(engine: AsyncEngine) -> float:
    """Check a connection out and time ``SELECT 1`` on it; invalidated rather than returned if interrupted."""
    async with engine.connect() as connection:
        try:
            started = time.perf_counter()
            await connection.execute(text("SELECT 1"))
            return time.perf_counter() - started
        except BaseException:
            # Cancelled mid-statement (or failed): returning it would wait on the server to roll back.
            await connection.invalidate()
            raise


def _abandon(check: asyncio.Task[float]) -> None:
    """Cancel ``check`` and let it finish in the background, its outcome logged at debug level."""
    check.cancel()
    if check.done():
        return
    _abandoned.add(check)

    def finished(task: asyncio.Task[float]) -> None:
        _abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("an abandoned health check ended with %s", describe_cause(task.exception()))  # type: ignore[arg-type]

    check.add_done_callback(finished)


def _stats(database: str | None) -> dict[str, int | float]:
    try:
        return pool_stats(database)
    except Exception:  # the stats are extra information: never the reason a health check fails
        logger.debug("pool_stats() failed during a health check", exc_info=True)
        return {}
