"""Read replicas: which server a read-only unit of work runs on, and which replicas are usable.

A unit of work is routed once, when its session is made, and stays on that
server for its whole life: a transaction never reads from one server and
writes to another. Read-only units go to a healthy replica in turn; the
rest go to the primary. A task that has just committed a read-write unit
reads from the primary for ``DB_READ_YOUR_WRITES_SECONDS``, since a replica
may not have replayed its write yet.

Health is the background's business: a task per event loop checks each
replica every ``DB_REPLICA_CHECK_INTERVAL_SECONDS`` (can it connect, how far
does it lag), over a connection of its own, so a busy pool never makes a
replica look dead and no request waits for a check. A request that fails to
reach a replica takes it out of the rotation at once and moves on to
another; the checks bring it back once it answers and keeps up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db_core.connector import DBConnector
from db_core.errors import NoReplicaAvailableError, describe_cause
from db_core.session import ROUTER, DBSession
from db_core.settings import DatabaseSettings

__all__ = ["READ_ONLY_NOTE", "ReplicaSet", "RoutedSessionMaker", "Router", "note_write", "read_only_engine"]

logger = logging.getLogger("db_core")

# When the current task last committed a read-write unit, per database (monotonic seconds).
# Replaced, never mutated: a task started meanwhile has a copy of the context and must not
# see this task's writes as its own.
_last_write: ContextVar[Mapping[str, float]] = ContextVar("db_core_last_write", default=MappingProxyType({}))


def note_write(database: str) -> None:
    """Record that the current task has just committed a read-write unit of work on ``database``."""
    _last_write.set(MappingProxyType({**_last_write.get(), database: time.monotonic()}))


READ_ONLY_NOTE = (
    "db_core: this unit of work is read-only (UnitOfWork(read_only=True) or a read-only dependency), and its "
    "transaction refuses writes on a replica and on the primary alike; write in a read-write unit of work"
)
# How the servers word a write refused in a read-only transaction (PostgreSQL, MySQL/MariaDB, SQLite).
_READ_ONLY_REFUSAL = re.compile(r"read[- ]?only", re.IGNORECASE)


def read_only_engine(connector: DBConnector, engine: AsyncEngine) -> AsyncEngine:
    """``connector``'s read-only engine over ``engine``'s pool, whose refused writes say why."""
    read_only = connector.read_only_engine(engine)
    event.listen(read_only.sync_engine, "handle_error", _note_read_only)
    return read_only


def _note_read_only(context: ExceptionContext) -> None:
    error = context.sqlalchemy_exception
    if error is not None and _READ_ONLY_REFUSAL.search(str(context.original_exception)):
        error.add_note(READ_ONLY_NOTE)


def _wrote_within(database: str, seconds: float) -> bool:
    written = _last_write.get().get(database)
    return written is not None and time.monotonic() - written < seconds


@dataclass
class _Replica:
    server: str  # host:port, never the URL
    usable: bool = True
    reason: str = "not checked yet"
    lag_seconds: float | None = None
    # When a request last found it unreachable: an older check's success does not bring it back.
    failed_at: float = float("-inf")


@dataclass
class ReplicaSet:
    """The replicas of one database and whether each is usable; shared by every event loop's engines."""

    database: str
    settings: DatabaseSettings
    replicas: list[_Replica] = field(default_factory=list)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def of(cls, database: str, settings: DatabaseSettings, connectors: list[DBConnector]) -> ReplicaSet:
        """The replica set of ``database``, one entry per replica connector."""
        servers = [f"{c.settings.host}:{c.port}" if c.port else c.settings.host for c in connectors]
        return cls(database, settings, [_Replica(server) for server in servers])

    def pick(self) -> int | None:
        """The next usable replica in turn, or ``None`` when none is."""
        count = len(self.replicas)
        start = next(self._turn)
        for step in range(count):
            index = (start + step) % count
            if self.replicas[index].usable:
                return index
        return None

    def states(self) -> list[str]:
        """One line per replica: its server and why it is or is not usable."""
        return [f"{r.server}: {'usable' if r.usable else r.reason}" for r in self.replicas]

    def failed(self, index: int, error: BaseException) -> None:
        """A request could not reach replica ``index``: out of the rotation until a later check passes."""
        replica = self.replicas[index]
        replica.failed_at = time.monotonic()
        self._set(index, False, f"unreachable: {describe_cause(error)}")

    def checked(self, index: int, started: float, lag_seconds: float | None, error: BaseException | None) -> None:
        """Record a background check of replica ``index`` that began at ``started`` (monotonic)."""
        replica = self.replicas[index]
        if error is not None:
            self._set(index, False, f"unreachable: {describe_cause(error)}")
            return
        replica.lag_seconds = lag_seconds
        limit = self.settings.replica_max_lag_seconds
        if lag_seconds is not None and math.isinf(lag_seconds):
            self._set(index, False, "its replication is not running (stopped or broken)")
        elif lag_seconds is not None and lag_seconds > limit:
            self._set(index, False, f"{lag_seconds:.1f} s behind the primary (DB_REPLICA_MAX_LAG_SECONDS={limit:g})")
        elif started > replica.failed_at:
            self._set(index, True, "usable")

    def _set(self, index: int, usable: bool, reason: str) -> None:
        replica = self.replicas[index]
        if replica.usable and not usable:
            logger.warning("replica %s of database %r left the rotation: %s", replica.server, self.database, reason)
        elif usable and not replica.usable:
            logger.warning("replica %s of database %r is back in the rotation", replica.server, self.database)
        replica.usable, replica.reason = usable, reason


class Router:
    """Chooses the server of each read-only session of one database, on one event loop.

    ``primary`` is the primary's read-only engine; ``engines`` are the
    replicas' (made READ ONLY here), ``probes`` their health-check engines
    (one connection each). The router owns and disposes the replicas' engines.
    """

    def __init__(
        self,
        replica_set: ReplicaSet,
        connectors: list[DBConnector],
        primary: AsyncEngine,
        engines: list[AsyncEngine],
        probes: list[AsyncEngine],
    ) -> None:
        self.replica_set = replica_set
        self.connectors = connectors
        self.primary = primary
        self.replicas = [read_only_engine(c, e) for c, e in zip(connectors, engines, strict=True)]
        self._owned = [*engines, *probes]
        self.probes = probes
        self._watcher: asyncio.Task[None] | None = None

    @property
    def settings(self) -> DatabaseSettings:
        """The settings of the database routed."""
        return self.replica_set.settings

    def choose(self) -> AsyncEngine:
        """The engine for a new read-only unit of work."""
        s = self.settings
        if _wrote_within(self.replica_set.database, s.read_your_writes_seconds):
            return self.primary
        index = self.replica_set.pick()
        if index is not None:
            return self.replicas[index]
        if s.replica_fallback == "error":
            raise NoReplicaAvailableError(self.replica_set.database, self.replica_set.states())
        return self.primary

    async def failover(self, session: AsyncSession, error: BaseException) -> bool:
        """After ``error`` reaching ``session``'s replica: mark it, and rebind ``session`` to another server.

        ``False`` when there is nothing to fail over from: the session was on
        the primary, or the error is a full pool rather than an unreachable server.
        """
        bind = session.sync_session.bind
        index = next((i for i, engine in enumerate(self.replicas) if engine.sync_engine is bind), None)
        if isinstance(error, sa_exc.TimeoutError) or index is None:
            return False
        self.replica_set.failed(index, error)
        await AsyncSession.rollback(session)  # forget the transaction begun on the unreachable server
        session.sync_session.bind = self.choose().sync_engine  # the failed one is out of the rotation now
        return True

    def watch(self) -> None:
        """Start checking the replicas in the background of the running loop (once)."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="db_core replica checks")

    def engines(self) -> list[AsyncEngine]:
        """The engines this router owns: the replicas' and their probes' (not the primary's)."""
        return list(self._owned)

    async def stop(self, *, wait: bool = True) -> None:
        """Stop the background checks; ``wait`` for the check under way to give its connection back."""
        watcher, self._watcher = self._watcher, None
        if watcher is None or watcher.done() or watcher.get_loop().is_closed():
            return
        watcher.cancel()
        if wait:
            await asyncio.wait({watcher})

    def forget(self) -> None:
        """In a forked child: drop the parent's checking task without touching it."""
        self._watcher = None

    async def _watch(self) -> None:
        interval = self.settings.replica_check_interval_seconds
        while True:
            await asyncio.gather(*(self._check(index) for index in range(len(self.probes))))
            await asyncio.sleep(interval)

    async def _check(self, index: int) -> None:
        started = time.monotonic()
        connector = self.connectors[index]
        try:
            # The connect timeout bounds the connect; this bounds the rest (a server that accepts and hangs).
            async with asyncio.timeout(connector.settings.connect_timeout_seconds * 2):
                async with self.probes[index].connect() as connection:
                    lag = await connector.replica_lag_seconds(connection)
        except Exception as error:
            self.replica_set.checked(index, started, None, error)
        else:
            self.replica_set.checked(index, started, lag, None)


class RoutedSessionMaker(async_sessionmaker[AsyncSession]):
    """An ``async_sessionmaker`` whose every session is bound to the server its :class:`Router` chooses."""

    def __init__(self, router: Router) -> None:
        super().__init__(bind=router.primary, class_=DBSession, expire_on_commit=False)
        self.router = router

    def __call__(self, **local_kw: Any) -> AsyncSession:
        """A new session on a usable replica (or the primary, as the settings say)."""
        local_kw.setdefault("bind", self.router.choose())
        session = super().__call__(**local_kw)
        session.info[ROUTER] = self.router
        return session
