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
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db_core.connector import DBConnector
from db_core.errors import ConfigurationError
from db_core.registry import get_connector
from db_core.session import DBSession
from db_core.settings import DatabaseSettings

__all__ = [
    "AsyncSessionMaker",
    "configure",
    "dispose_engine",
    "get_connector_instance",
    "get_engine",
    "get_sessionmaker",
    "get_settings",
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


@dataclass
class _Database:
    settings: DatabaseSettings
    connector: DBConnector
    engines: dict[int, _LoopEngine] = field(default_factory=dict)


_lock = threading.Lock()
_configured: DatabaseSettings | None = None
_database: _Database | None = None
_NO_LOOP = 0  # key of the engine made outside any running loop
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
        if _database is not None:
            _forget_dead_loops(_database)
        if _database is not None and _database.engines:
            raise ConfigurationError("configure() called while engines are open: await dispose_engine() first")
        _configured = settings
        _drop_database()


def get_settings() -> DatabaseSettings:
    """The settings in use: those given to :func:`configure`, else ``DB_*`` and ``.env`` (read once)."""
    return _get_database().settings


def get_connector_instance() -> DBConnector:
    """The connector built from :func:`get_settings` (shared by every loop's engine)."""
    return _get_database().connector


def get_engine() -> AsyncEngine:
    """The engine of the running event loop, created on first use.

    Thread-safe; each event loop gets its own engine, disposed while the loop
    shuts down (``asyncio.run``, ``asyncio.Runner``, anyio). Call it from async
    code: an engine made outside a running loop only works in one loop.
    """
    return _get_loop_engine().engine


def get_sessionmaker() -> AsyncSessionMaker:
    """The ``async_sessionmaker`` bound to :func:`get_engine`.

    Its sessions are :class:`~db_core.session.DBSession` (``expire_on_commit=False``).
    """
    return _get_loop_engine().sessionmaker


async def dispose_engine() -> None:
    """Close the pooled connections and forget the engines and the settings read from the environment.

    The next :func:`get_engine` starts afresh (re-reading ``DB_*`` unless
    :func:`configure` was used). Engines of other, still running loops are
    disposed on their own loops.
    """
    global _database
    with _lock:
        database, _database = _database, None
    if database is None:
        return
    current = _running_loop()
    for entry in database.engines.values():
        loop = entry.loop() if entry.loop is not None else None
        if loop is current or entry.loop is None:
            await entry.engine.dispose()
        elif loop is not None and loop.is_running() and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(entry.engine.dispose(), loop)
        else:
            # Its loop is gone: the connections cannot be closed politely any more.
            await entry.engine.dispose(close=False)
    database.engines.clear()
    database.connector.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _get_database() -> _Database:
    database = _database
    if database is not None:
        return database
    with _lock:
        return _database_locked()


def _database_locked() -> _Database:
    global _database
    if _database is None:
        settings = _configured if _configured is not None else DatabaseSettings()
        _database = _Database(settings, get_connector(settings))
    return _database


def _drop_database() -> None:
    global _database
    if _database is not None:
        _database.connector.close()
    _database = None


def _get_loop_engine() -> _LoopEngine:
    loop = _running_loop()
    key = id(loop) if loop is not None else _NO_LOOP
    database = _database
    if database is not None:
        entry = database.engines.get(key)
        if entry is not None and (entry.loop is None or entry.loop() is loop):
            return entry
    with _lock:
        database = _database_locked()
        entry = database.engines.get(key)
        if entry is not None and (entry.loop is None or entry.loop() is loop):
            return entry
        _forget_dead_loops(database)
        engine = database.connector.create_engine()
        sessionmaker = AsyncSessionMaker(bind=engine, class_=DBSession, expire_on_commit=False)
        entry = _LoopEngine(weakref.ref(loop) if loop is not None else None, engine, sessionmaker)
        if loop is not None:
            entry.finalizer = _dispose_at_shutdown(database, key, engine)
            _start(entry.finalizer)
        database.engines[key] = entry
        return entry


def _after_fork_in_child() -> None:
    """Give a forked child engines of its own, leaving the parent's connections alone.

    A child that used the parent's pooled connections would interleave its
    statements with the parent's on the same sockets; one that closed them
    would close them for the parent too.
    """
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork time
    if _database is not None:
        _inherited.extend(entry.engine for entry in _database.engines.values())
        _database.engines.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget_dead_loops(database: _Database) -> None:
    """Drop engines whose loop closed without shutting down (``loop.close()`` without ``asyncio.run``)."""
    for key, entry in list(database.engines.items()):
        loop = entry.loop() if entry.loop is not None else None
        if entry.loop is not None and (loop is None or loop.is_closed()):
            del database.engines[key]


async def _dispose_at_shutdown(database: _Database, key: int, engine: AsyncEngine) -> AsyncGenerator[None, None]:
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
        if entry is not None and entry.engine is engine:
            del database.engines[key]
            try:
                await engine.dispose()
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
