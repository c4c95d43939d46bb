"""The engine and sessionmaker singletons: one engine per event loop.

An asyncio connection belongs to the event loop that opened it, so a single
global engine breaks as soon as a second loop uses it (a second
``asyncio.run()``, pytest-asyncio's per-test loops, Starlette's
``TestClient``). Here each running loop gets its own engine, created on first
use and disposed while that loop shuts down, so callers keep calling
:func:`get_engine` as if it were one singleton.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from db_core.connector import DBConnector
from db_core.errors import ConfigurationError, UnitOfWorkError
from db_core.registry import get_connector
from db_core.routing import ReplicaSet, RoutedSessionMaker, Router, read_only_engine
from db_core.session import DBSession
from db_core.settings import DEFAULT_DATABASE, DatabaseSettings

__all__ = [
    "AsyncSessionMaker",
    "configure",
    "dispose_engine",
    "get_connector_instance",
    "get_engine",
    "get_sessionmaker",
    "get_settings",
    "has_replicas",
    "join_transaction",
]

AsyncSessionMaker = async_sessionmaker[AsyncSession]

logger = logging.getLogger("db_core")


@dataclass
class _LoopEngine:
    loop: weakref.ref[asyncio.AbstractEventLoop] | None
    engine: AsyncEngine
    sessionmaker: AsyncSessionMaker
    # Held so the loop's shutdown_asyncgens() finds it and disposes the engine in time.
    finalizer: AsyncGenerator[None, None] | None = None
    # Made by the first read-only unit of work on this loop.
    read_only: AsyncSessionMaker | None = None
    router: Router | None = None
    # Made by the first get_engine(direct=True) on this loop, when DB_DIRECT_URL is set.
    direct: AsyncEngine | None = None
    # Set by join_transaction(): every session of this loop joins one connection's transaction.
    joined: AsyncSessionMaker | None = None
    # The replicas' engines (owned by the router), for watch_engines().
    replicas: list[AsyncEngine] = field(default_factory=list)

    def statement_engines(self) -> list[AsyncEngine]:
        """The engines of this loop that run statements: the primary's, the direct one, the replicas' (no probes)."""
        direct = [self.direct] if self.direct is not None else []
        return [self.engine, *direct, *self.replicas]

    def engines(self) -> list[AsyncEngine]:
        """Every engine of this loop: the primary's, the direct one, and once routed the replicas'."""
        direct = [self.direct] if self.direct is not None else []
        return [self.engine, *direct, *(self.router.engines() if self.router is not None else ())]

    async def dispose(self, *, close: bool = True) -> None:
        if self.router is not None:
            await self.router.stop(wait=close)
        for engine in self.engines():
            await engine.dispose(close=close)


@dataclass
class _Database:
    name: str
    settings: DatabaseSettings
    connector: DBConnector
    replicas: list[DBConnector]
    replica_set: ReplicaSet | None
    direct: DBConnector | None
    engines: dict[int, _LoopEngine] = field(default_factory=dict)

    def close(self) -> None:
        for connector in [self.connector, *self.replicas, *([self.direct] if self.direct else [])]:
            connector.close()


_lock = threading.Lock()
_configured: DatabaseSettings | None = None
_settings: DatabaseSettings | None = None  # those in use, once read
_databases: dict[str, _Database] = {}
_NO_LOOP = 0  # key of the engine made outside any running loop
# Open join_transaction() blocks per database. A session asked for on another loop meanwhile would commit for good.
_joins: Counter[str] = Counter()
_JOINED_ELSEWHERE = (
    "a test's transaction (join_transaction(), the db_session fixture) is open on another event loop than this "
    "code's, so this session would commit for good: run the test and its fixtures on one loop (pytest-asyncio: "
    "set asyncio_default_fixture_loop_scope and asyncio_default_test_loop_scope to the same scope) and call an app "
    "in-process on that loop (httpx's ASGITransport), not in a thread (TestClient)"
)
# Called with each engine made from now on (watch_engines()).
EngineHook = Callable[[AsyncEngine], None]
_engine_hooks: list[EngineHook] = []
# Engines a forked child inherited: never used nor closed there (their sockets are the
# parent's), and kept referenced so the garbage collector does not tidy them up either.
_inherited: list[AsyncEngine] = []


def configure(settings: DatabaseSettings | None) -> None:
    """Use ``settings`` instead of the environment; ``None`` returns to the environment.

    Call it before the first :func:`get_engine`, or after
    ``await dispose_engine()``; reconfiguring a live engine raises
    :class:`~db_core.errors.ConfigurationError`.
    """
    global _configured
    with _lock:
        for database in _databases.values():
            _forget_dead_loops(database)
        if any(database.engines for database in _databases.values()):
            raise ConfigurationError("configure() called while engines are open: await dispose_engine() first")
        _configured = settings
        _drop_databases()


def get_settings() -> DatabaseSettings:
    """The settings in use: those given to :func:`configure`, else ``DB_*`` and ``.env`` (read once).

    A named database's are ``get_settings().database(name)``.
    """
    settings = _settings
    if settings is not None:
        return settings
    with _lock:
        return _settings_locked()


def get_connector_instance(database: str | None = None) -> DBConnector:
    """The connector of ``database`` (default: the ``DB_*`` one), shared by every loop's engines."""
    return _get_database(database).connector


def get_engine(database: str | None = None, *, direct: bool = False) -> AsyncEngine:
    """The engine of ``database``'s primary on the running event loop, created on first use.

    ``database`` names a database configured by ``DB_DATABASES__<NAME>__*``;
    ``None`` (or ``"default"``) is the ``DB_*`` one. Thread-safe; each event
    loop gets its own engine, disposed while the loop shuts down
    (``asyncio.run``, ``asyncio.Runner``, anyio). Call it from async code: an
    engine made outside a running loop only works in one loop.

    ``direct=True`` gives the engine of ``DB_DIRECT_URL``, the server behind
    PgBouncer, for session-level work (migrations, advisory locks, ``LISTEN``);
    without ``DB_DIRECT_URL`` it is the same engine.
    """
    entry = _get_loop_engine(database)
    if not direct:
        return entry.engine
    if entry.direct is None:
        with _lock:
            connector = _database_locked(database).direct
            if connector is None:
                return entry.engine
            if entry.direct is None:
                entry.direct = _made(connector.create_engine())
    return entry.direct


def get_sessionmaker(database: str | None = None, *, read_only: bool = False) -> AsyncSessionMaker:
    """The ``async_sessionmaker`` of ``database`` on the running event loop.

    Its sessions are :class:`~db_core.session.DBSession` (``expire_on_commit=False``)
    bound to :func:`get_engine`. With ``read_only``, each session runs ``READ ONLY``
    transactions on one usable replica (``DB_REPLICA_URLS``), chosen when it is
    made, or on the primary when there are none, none is usable
    (``DB_REPLICA_FALLBACK=primary``) or the task has just written
    (``DB_READ_YOUR_WRITES_SECONDS``).
    """
    entry = _get_loop_engine(database)
    if entry.joined is not None:
        return entry.joined
    if _joins and _joins[_key(database)]:
        raise UnitOfWorkError(_JOINED_ELSEWHERE)
    if not read_only:
        return entry.sessionmaker
    if entry.read_only is None:
        with _lock:
            if entry.read_only is None:
                entry.read_only = _read_only_sessionmaker(_database_locked(database), entry)
    return entry.read_only


@contextmanager
def join_transaction(connection: AsyncConnection, database: str | None = None) -> Iterator[AsyncSessionMaker]:
    """Make every session of ``database`` on the running loop join ``connection``'s open transaction.

    For tests that roll back everything at the end: inside the block,
    :func:`get_sessionmaker` (so :class:`~db_core.UnitOfWork` and the FastAPI
    dependencies, read-only or not) makes sessions bound to ``connection``
    whose commits and rollbacks are SAVEPOINTs (SQLAlchemy's "joining a
    session into an external transaction"); the outer transaction stays the
    caller's to roll back. Yields that sessionmaker. Engines used directly
    (``get_engine().connect()``) are not affected.

    A statement the server would commit implicitly before running (DDL on
    MySQL and MariaDB) raises :class:`~db_core.errors.UnitOfWorkError` instead
    of running: it would end the outer transaction, and the rollback would
    keep everything written before it.
    """
    entry = _get_loop_engine(database)
    connector = _get_database(database).connector
    joined = AsyncSessionMaker(
        bind=connection, class_=DBSession, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )

    def refuse_implicit_commit(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if connector.commits_implicitly(statement):
            first = statement.strip().splitlines()[0][:80]
            raise UnitOfWorkError(
                f"{first!r} would commit the test's transaction: {connector.name} commits implicitly before DDL, "
                "so the rollback at the end of the test would keep every row written before it. Create the "
                "schema before the test's transaction begins (a fixture), or use a temporary table"
            )

    sync_connection = connection.sync_connection
    assert sync_connection is not None
    event.listen(sync_connection, "before_cursor_execute", refuse_implicit_commit)
    previous, entry.joined = entry.joined, joined
    _joins[_key(database)] += 1
    try:
        yield joined
    finally:
        _joins[_key(database)] -= 1
        if not _joins[_key(database)]:
            del _joins[_key(database)]
        entry.joined = previous
        event.remove(sync_connection, "before_cursor_execute", refuse_implicit_commit)


def live_engines(database: str | None = None) -> list[AsyncEngine]:
    """The primary engine of ``database`` on every open event loop that has one (for :func:`~db_core.pool_stats`).

    Safe from any thread: a snapshot, taken without the lock.
    """
    found = []
    for entry in list(_get_database(database).engines.values()):
        loop = entry.loop() if entry.loop is not None else None
        if entry.loop is None or (loop is not None and not loop.is_closed()):
            found.append(entry.engine)
    return found


def watch_engines(hook: EngineHook) -> None:
    """Call ``hook`` with each engine db_core uses for statements: those open now, then each new one as it is made.

    The seam for integrations such as :mod:`db_core.telemetry`: every event
    loop's engine of every database, primary, ``DB_DIRECT_URL`` and replicas
    (not the replicas' one-connection health-check engines). Read-only engines
    share their primary's or replica's events, so they are not passed. The
    hook runs under db_core's lock, where the engine is made: it must be quick
    and must not call back into db_core; what it raises is logged, not raised.
    Watching with the same hook twice calls it once per engine.
    """
    with _lock:
        if hook in _engine_hooks:
            return
        _engine_hooks.append(hook)
        for database in _databases.values():
            for entry in database.engines.values():
                for engine in entry.statement_engines():
                    _call_hook(hook, engine)


def unwatch_engines(hook: EngineHook) -> None:
    """Stop calling ``hook`` for new engines (no effect if it was not watching)."""
    with _lock:
        if hook in _engine_hooks:
            _engine_hooks.remove(hook)


def _made(engine: AsyncEngine) -> AsyncEngine:
    """``engine``, once every :func:`watch_engines` hook has seen it."""
    for hook in list(_engine_hooks):
        _call_hook(hook, engine)
    return engine


def _call_hook(hook: EngineHook, engine: AsyncEngine) -> None:
    try:
        hook(engine)
    except Exception:
        logger.warning("an engine hook (watch_engines) failed on a new engine", exc_info=True)


def has_replicas(database: str | None = None) -> bool:
    """Whether ``database`` has read replicas configured."""
    return bool(_get_database(database).replicas)


async def dispose_engine() -> None:
    """Close the pooled connections of every database and forget the engines and the settings read from the environment.

    The next :func:`get_engine` starts afresh (re-reading ``DB_*`` unless
    :func:`configure` was used). Engines of other, still running loops are
    disposed on their own loops.
    """
    global _settings
    with _lock:
        databases = list(_databases.values())
        _databases.clear()
        _settings = None
    current = _running_loop()
    for database in databases:
        for entry in database.engines.values():
            loop = entry.loop() if entry.loop is not None else None
            if loop is current or entry.loop is None:
                await entry.dispose()
            elif loop is not None and loop.is_running() and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(entry.dispose(), loop)
            else:
                # Its loop is gone: the connections cannot be closed politely any more.
                await entry.dispose(close=False)
        database.engines.clear()
        database.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settings_locked() -> DatabaseSettings:
    global _settings
    if _settings is None:
        _settings = _configured if _configured is not None else DatabaseSettings()
    return _settings


def _key(name: str | None) -> str:
    """The key of database ``name``: names are case-insensitive, ``None`` is the default one."""
    return name.lower() if name else DEFAULT_DATABASE


def _get_database(name: str | None) -> _Database:
    database = _databases.get(_key(name))
    if database is not None:
        return database
    with _lock:
        return _database_locked(name)


def _database_locked(name: str | None) -> _Database:
    key = _key(name)
    database = _databases.get(key)
    if database is None:
        settings = _settings_locked().database(key)
        replicas = [get_connector(replica) for replica in settings.replicas]
        replica_set = ReplicaSet.of(key, settings, replicas) if replicas else None
        direct = get_connector(settings.direct) if settings.direct is not settings else None
        database = _Database(key, settings, get_connector(settings), replicas, replica_set, direct)
        _databases[key] = database
    return database


def _drop_databases() -> None:
    global _settings
    for database in _databases.values():
        database.close()
    _databases.clear()
    _settings = None


def _get_loop_engine(name: str | None) -> _LoopEngine:
    loop = _running_loop()
    key = id(loop) if loop is not None else _NO_LOOP
    database = _databases.get(_key(name))
    if database is not None:
        entry = database.engines.get(key)
        if entry is not None and (entry.loop is None or entry.loop() is loop):
            return entry
    with _lock:
        database = _database_locked(name)
        entry = database.engines.get(key)
        if entry is not None and (entry.loop is None or entry.loop() is loop):
            return entry
        _forget_dead_loops(database)
        engine = _made(database.connector.create_engine())
        sessionmaker = AsyncSessionMaker(bind=engine, class_=DBSession, expire_on_commit=False)
        entry = _LoopEngine(weakref.ref(loop) if loop is not None else None, engine, sessionmaker)
        if loop is not None:
            entry.finalizer = _dispose_at_shutdown(database, key, entry)
            _start(entry.finalizer)
        database.engines[key] = entry
        return entry


def _read_only_sessionmaker(database: _Database, entry: _LoopEngine) -> AsyncSessionMaker:
    primary = read_only_engine(database.connector, entry.engine)
    if database.replica_set is None:
        return AsyncSessionMaker(bind=primary, class_=DBSession, expire_on_commit=False)
    engines = [_made(replica.create_engine()) for replica in database.replicas]
    entry.replicas = engines
    # A connection of its own per replica for the checks: a busy pool must not make a replica look dead.
    probes = [type(replica)(_probe_settings(replica.settings)).create_engine() for replica in database.replicas]
    entry.router = Router(database.replica_set, database.replicas, primary, engines, probes)
    if entry.loop is not None:
        entry.router.watch()
    return RoutedSessionMaker(entry.router)


def _probe_settings(settings: DatabaseSettings) -> DatabaseSettings:
    return settings.model_copy(update={"pool_size": 1, "max_overflow": 0, "pool_pre_ping_idle_seconds": 0.0})


def _after_fork_in_child() -> None:
    """Give a forked child engines of its own, leaving the parent's connections alone.

    A child that used the parent's pooled connections would interleave its
    statements with the parent's on the same sockets; one that closed them
    would close them for the parent too.
    """
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork time
    for database in _databases.values():
        for entry in database.engines.values():
            if entry.router is not None:
                entry.router.forget()
            _inherited.extend(entry.engines())
        database.engines.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget_dead_loops(database: _Database) -> None:
    """Drop engines whose loop closed without shutting down (``loop.close()`` without ``asyncio.run``)."""
    for key, entry in list(database.engines.items()):
        loop = entry.loop() if entry.loop is not None else None
        if entry.loop is not None and (loop is None or loop.is_closed()):
            del database.engines[key]


async def _dispose_at_shutdown(database: _Database, key: int, loop_engine: _LoopEngine) -> AsyncGenerator[None, None]:
    """An async generator whose ``finally`` runs in the loop's ``shutdown_asyncgens()``.

    That step of ``asyncio.run()`` comes after every task has finished and
    before the loop closes: the one moment the connections can be closed
    cleanly, without "Event loop is closed" or "non-checked-in connection".
    """
    try:
        yield
    finally:
        entry = database.engines.get(key)
        # Absent: dispose_engine() got there first.
        if entry is loop_engine:
            del database.engines[key]
            try:
                await loop_engine.dispose()
            except Exception:
                logger.warning("disposing the engine at event loop shutdown failed", exc_info=True)


def _start(agen: AsyncGenerator[None, None]) -> None:
    """Run ``agen`` to its first ``yield`` without awaiting, registering it with the running loop.

    The body before ``yield`` does not await, so one ``send`` completes the
    step; the loop learns about the generator through the firstiter hook.
    """
    step = agen.__anext__()
    try:
        step.send(None)
    except StopIteration:
        return
    raise AssertionError("unreachable: the finalizer yields before awaiting")  # pragma: no cover
