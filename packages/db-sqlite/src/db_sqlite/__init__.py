"""db_sqlite: the SQLite connector for db_core, over aiosqlite (``DB_TYPE=sqlite``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from db_core import ConfigurationError, DBConnector, ShellCommand
from db_sqlite.__about__ import __version__
from db_sqlite.connection import connect as db_connect

__all__ = ["MEMORY", "SQLiteConnector", "__version__"]

MEMORY = ":memory:"


class SQLiteConnector(DBConnector):
    """SQLite through aiosqlite.

    ``DB_NAME`` is a file path (relative to the working directory, default
    ``app.db``) or ``:memory:``. Every connection enforces foreign keys; file
    databases use WAL. Each transaction starts with ``BEGIN IMMEDIATE``, so a
    reader never fails with "database is locked" when it turns writer.

    SQLite runs one write transaction at a time, so by default the pool has
    one connection and no overflow: units of work queue fairly in the pool
    (up to ``DB_POOL_TIMEOUT_SECONDS``) rather than poll for the file lock.
    ``DB_POOL_SIZE``/``DB_MAX_OVERFLOW`` still apply when set; other processes
    are waited for up to ``DB_SQLITE_BUSY_TIMEOUT_SECONDS``.

    ``:memory:`` is one database for the whole process (all event loops),
    kept until ``dispose_engine()``; each engine reaches it through a single
    connection, so its units of work run one after another and a rollback
    only ever undoes its own work.
    """

    name = "sqlite"
    drivername = "sqlite+aiosqlite"
    url_schemes = ("sqlite",)
    api_version = "1.0"
    default_port = None
    default_database = "app.db"
    default_pool_size = 1
    default_max_overflow = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memory_name: str | None = None
        self._keeper: sqlite3.Connection | None = None

    @property
    def is_memory(self) -> bool:
        """Whether this is the in-memory database."""
        return self.database == MEMORY

    def get_url(self) -> URL:
        """A file URL with an absolute path, or the process's shared in-memory database."""
        if self.is_memory:
            return URL.create(
                self.drivername,
                database=f"file:{self._memory()}",
                query={"mode": "memory", "cache": "shared", "uri": "true"},
            )
        try:
            path = Path(self.database).expanduser()
        except RuntimeError:  # ~user of a user that does not exist
            raise ConfigurationError(
                f"DB_NAME={self.database!r}: the home directory in it cannot be found; "
                "set DB_NAME to a path without ~user, or of an existing user"
            ) from None
        return URL.create(self.drivername, database=str(path.absolute()))

    @contextlib.contextmanager
    def shell(self, arguments: Sequence[str]) -> Iterator[ShellCommand]:
        """``sqlite3`` on the database file (its absolute path), with foreign keys on and the busy timeout.

        ``:memory:`` opens a new, empty in-memory database: the application's
        own lives inside its process.
        """
        database = MEMORY if self.is_memory else str(self.get_url().database)
        timeout = round(self.settings.sqlite_busy_timeout_seconds * 1000)
        argv = ["sqlite3", "-cmd", f".timeout {timeout}", "-cmd", "PRAGMA foreign_keys = ON", database, *arguments]
        yield ShellCommand(argv, package="sqlite3")

    def get_connect_args(self) -> dict[str, Any]:
        """The busy timeout (how long a writer waits for another process's lock)."""
        return {
            "timeout": self.settings.sqlite_busy_timeout_seconds,
            "async_creator_fn": functools.partial(_connect, self.settings.statement_timeout_seconds),
        }

    def get_engine_args(self) -> dict[str, Any]:
        """The pool settings for files; one long-lived connection for ``:memory:``."""
        args = super().get_engine_args()
        if self.is_memory:
            args.update(pool_size=1, max_overflow=0, pool_recycle=-1, pool_pre_ping=False)
        elif "pool_pre_ping" not in self.settings.model_fields_set:
            # A database file cannot drop a connection: a ping per checkout would only cost a call.
            args["pool_pre_ping"] = False
        return args

    def in_transaction(self, dbapi_connection: Any) -> bool:
        """sqlite3's own flag (the library's autocommit state): no call into the database thread."""
        return bool(dbapi_connection.driver_connection.in_transaction)

    def on_connect(self, dbapi_connection: Any) -> None:
        """Foreign keys on, WAL for files, and transactions left to :meth:`setup_engine`."""
        # Autocommit at the driver level: the "begin" listener issues BEGIN itself,
        # which is what makes SAVEPOINT and BEGIN IMMEDIATE work with pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            if not self.is_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    def read_only_engine(self, engine: AsyncEngine) -> AsyncEngine:
        """Transactions under ``PRAGMA query_only`` that begin deferred (no write lock), with their first statement."""
        read_only = engine.execution_options()  # its own events, the same pool

        def begin_read_only(connection: Connection) -> None:
            connection.connection.driver_connection.read_only = True  # type: ignore[union-attr]

        event.listen(read_only.sync_engine, "begin", begin_read_only)
        return read_only

    def setup_engine(self, engine: AsyncEngine) -> None:
        """Start every transaction with ``BEGIN IMMEDIATE``; roll back before a connection is closed."""

        # The dialect's own begin step, where SQLAlchemy's "begin" event would make every
        # statement of every connection dispatch connection events. No call into the database
        # thread: BEGIN IMMEDIATE goes with the transaction's first statement (connection.py).
        def begin_immediate(connection: PoolProxiedConnection) -> None:
            connection.driver_connection.begin_pending = True  # type: ignore[union-attr]

        engine.sync_engine.dialect.do_begin = begin_immediate  # type: ignore[method-assign,assignment]

        if not self.is_memory:
            # The engine's own (absolute) path, not one re-derived from a later working directory.
            directory = Path(engine.url.database or "").parent

            @event.listens_for(engine.sync_engine, "do_connect")
            def _check_directory(*_args: Any) -> None:
                # Said here, before aiosqlite starts a thread: its own failure path
                # (aiosqlite 0.22) can print a worker traceback after the loop closed.
                self._require_directory(directory)

        limit = self.settings.statement_timeout_seconds
        if limit is not None:
            _limit_statements(engine, limit)

        @event.listens_for(engine.sync_engine, "close")
        def _close(dbapi_connection: Any, _record: Any) -> None:
            # A connection invalidated mid-statement (a cancelled task) is closed while
            # its cursor lives on in the traceback; sqlite then keeps it as a "zombie"
            # that holds the write lock until the garbage collector finds the cursor.
            # Rolling back first releases the lock now.
            with contextlib.suppress(Exception):
                dbapi_connection.rollback()

    def test_database_name(self, suffix: str = "") -> str:
        """``test_<file name>`` in the same directory (``app.db``: ``test_app.db``); ``:memory:`` stays in memory."""
        if self.is_memory:
            return MEMORY
        path = Path(self.database)
        stem, dot, extension = path.name.partition(".")
        return str(path.with_name(f"test_{stem}{suffix}{dot}{extension}"))

    async def create_database(self) -> bool:
        """Create the database file (an empty file is an empty database); ``:memory:`` always exists."""
        if self.is_memory:
            return False
        path = Path(self.get_url().database or "")
        self._require_directory(path.parent)
        return await asyncio.to_thread(_create_file, path)

    async def drop_database(self) -> None:
        """Delete the database file and its WAL files; nothing for ``:memory:``."""
        if not self.is_memory:
            path = Path(self.get_url().database or "")
            await asyncio.to_thread(_delete_files, path)

    def _require_directory(self, directory: Path) -> None:
        """Raise the :class:`ConfigurationError` naming ``DB_NAME`` unless ``directory`` (the file's) exists."""
        if not directory.is_dir():
            raise ConfigurationError(
                f"unable to open database file: the directory {directory} does not exist "
                f"(DB_NAME={self.database!r}); create it or set DB_NAME to a file in an existing directory"
            )

    def close(self) -> None:
        """Let the in-memory database go."""
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
            self._memory_name = None

    def _memory(self) -> str:
        if self._memory_name is None:
            self._memory_name = f"db_core_{uuid.uuid4().hex}"
            # A shared in-memory database lives while one connection to it is open;
            # this one outlives every engine and event loop until close().
            self._keeper = sqlite3.connect(
                f"file:{self._memory_name}?mode=memory&cache=shared", uri=True, check_same_thread=False
            )
        return self._memory_name


def _create_file(path: Path) -> bool:
    try:
        path.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def _delete_files(path: Path) -> None:
    for file in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal"))):
        file.unlink(missing_ok=True)


class _Deadline:
    """When the statement running on one connection must stop (read by SQLite's progress handler)."""

    at = math.inf

    def expired(self) -> int:
        return 1 if time.monotonic() > self.at else 0


# SQLite has no statement timeout of its own: a progress handler, called every
# _CHECK_EVERY virtual machine steps, interrupts the statement once its deadline passed.
_deadlines: weakref.WeakKeyDictionary[aiosqlite.Connection, _Deadline] = weakref.WeakKeyDictionary()
_CHECK_EVERY = 1000


def _limit_statements(engine: AsyncEngine, seconds: float) -> None:
    """Interrupt any statement of ``engine`` that runs longer than ``seconds`` (DB_STATEMENT_TIMEOUT_SECONDS)."""

    def deadline(connection: Connection | None) -> _Deadline | None:
        if connection is None or connection.closed or connection.invalidated:
            return None
        driver = connection.connection.driver_connection
        return _deadlines.get(driver) if driver is not None else None

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _start(connection: Connection, *_args: Any) -> None:
        found = deadline(connection)
        if found is not None:
            found.at = time.monotonic() + seconds

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _stop(connection: Connection, *_args: Any) -> None:
        found = deadline(connection)
        if found is not None:
            found.at = math.inf

    @event.listens_for(engine.sync_engine, "handle_error")
    def _explain(context: Any) -> BaseException | None:
        found = deadline(context.connection)
        if found is None or found.at == math.inf:
            return None
        expired, found.at = found.expired(), math.inf
        original = context.original_exception
        if expired and isinstance(original, sqlite3.OperationalError) and "interrupted" in str(original):
            # sqlite only says "interrupted"; say by what, and keep the usual exception type.
            return sa_exc.OperationalError(
                context.statement,
                None,
                sqlite3.OperationalError(
                    f"interrupted: the statement ran longer than DB_STATEMENT_TIMEOUT_SECONDS={seconds:g}"
                ),
            )
        return None


_closing: set[asyncio.Future[Any]] = set()


async def _connect(statement_timeout: float | None, *args: Any, **kwargs: Any) -> aiosqlite.Connection:
    """``aiosqlite.connect``, safe to cancel.

    aiosqlite opens the database in its worker thread; when the awaiting task
    is cancelled meanwhile, the handle it opens is never closed and is left to
    the garbage collector. Here the opening always finishes, and a connection
    nobody waits for any more is closed.
    """
    connection = db_connect(*args, **kwargs)
    # As SQLAlchemy does for its own connect: the worker must not keep the interpreter alive.
    thread = connection if isinstance(connection, threading.Thread) else connection._thread
    thread.daemon = True
    opening = asyncio.ensure_future(_open(connection, statement_timeout))
    try:
        return await asyncio.shield(opening)
    except BaseException:
        opening.add_done_callback(_close_unclaimed)
        raise


async def _open(connection: aiosqlite.Connection, statement_timeout: float | None) -> aiosqlite.Connection:
    opened = await connection
    if statement_timeout is not None:
        deadline = _Deadline()
        await opened.set_progress_handler(deadline.expired, _CHECK_EVERY)
        _deadlines[opened] = deadline
    return opened


def _close_unclaimed(opening: asyncio.Future[aiosqlite.Connection]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        return
    closing = asyncio.ensure_future(opening.result().close())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
