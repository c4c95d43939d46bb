"""An aiosqlite connection that crosses into its database thread once per statement, not four times.

aiosqlite runs sqlite3 in a thread of its own, and every call into it is a
round trip between threads (a queue, a wake-up, the GIL, the event loop's
self-pipe): the cost of a unit of work on SQLite. SQLAlchemy's adapter makes
four such calls per statement (cursor, execute, fetch, close) and one for
``BEGIN``. Here a statement is one call that also fetches its first rows
and closes its cursor, and ``BEGIN IMMEDIATE`` travels with the first
statement of the transaction: a unit of work is two calls (``BEGIN`` and
the statement, then ``COMMIT``) where it was eight.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import deque
from collections.abc import Generator, Iterable
from typing import Any

import aiosqlite

__all__ = ["Connection", "Cursor", "connect"]

# Rows fetched with the statement: a larger result is streamed PREFETCH rows per call after that.
PREFETCH = 256

_BEGIN = ("BEGIN IMMEDIATE",)
# A deferred BEGIN takes no write lock: a read-only transaction never waits for a writer.
_BEGIN_READ_ONLY = ("PRAGMA query_only = 1", "BEGIN")

_Described = tuple[Any, int, Any, list[Any], "sqlite3.Cursor | None"]


def connect(database: str, **kwargs: Any) -> Connection:
    """Like ``aiosqlite.connect()``: a connection to start by awaiting it."""
    return Connection(functools.partial(sqlite3.connect, database, **kwargs), 64)


class Connection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` whose cursors run each statement in one call (see the module).

    Before aiosqlite 0.22 a connection is a ``threading.Thread``: no method here may take a
    ``Thread``'s name (``run``, ``start``, ``join``...).
    """

    begin_pending = False
    """``BEGIN IMMEDIATE`` is to be sent with the next statement (set by the dialect's begin step)."""

    read_only = False
    """The transaction about to begin is read-only: ``PRAGMA query_only`` and a deferred ``BEGIN``."""

    _query_only = False  # PRAGMA query_only is on until the transaction ends

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open, or about to be with the next statement."""
        return self.begin_pending or bool(self._conn.in_transaction)

    def cursor(self) -> Cursor:  # type: ignore[override]
        """A new :class:`Cursor` (awaitable, and an async context manager, as aiosqlite's)."""
        return Cursor(self)

    async def commit(self) -> None:
        """COMMIT; nothing to do (and no call into the thread) when the transaction ran no statement."""
        await self._end(sqlite3.Connection.commit)

    async def rollback(self) -> None:
        """ROLLBACK; nothing to do (and no call into the thread) when the transaction ran no statement."""
        await self._end(sqlite3.Connection.rollback)

    async def _end(self, end: Any) -> None:
        self.read_only = False
        if self.begin_pending:
            self.begin_pending = False
            return
        query_only, self._query_only = self._query_only, False
        await self._execute(_end, self._conn, end, query_only)  # type: ignore[no-untyped-call]

    async def run_statement(self, sql: str, parameters: Any, many: bool) -> _Described:
        """Run one statement (after ``BEGIN IMMEDIATE`` if pending) in one call into the thread."""
        begin: tuple[str, ...] = ()
        if self.begin_pending:
            begin = _BEGIN_READ_ONLY if self.read_only else _BEGIN
            self._query_only = self.read_only
            self.begin_pending = self.read_only = False
        return await self._execute(_run, self._conn, begin, sql, parameters, many)  # type: ignore[no-untyped-call,no-any-return]

    async def call_in_thread(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in the database thread."""
        return await self._execute(function, *args)  # type: ignore[no-untyped-call]


class Cursor:
    """A DBAPI-style async cursor over :class:`Connection`: one call into the thread per statement.

    The first :data:`PREFETCH` rows come back with the statement; a larger
    result keeps its sqlite3 cursor open and is fetched on demand, so a
    streamed result still arrives in pieces.
    """

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: Any = None
        self._rows: deque[Any] = deque()
        self._open: sqlite3.Cursor | None = None  # still holding rows beyond the first ones

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self
        yield  # a generator, so `await connection.cursor()` works as with aiosqlite

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        """Run ``sql`` and fetch its first rows, in one call into the thread."""
        await self._run(sql, parameters, many=False)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        """Run ``sql`` once per parameter set, in one call into the thread."""
        await self._run(sql, list(seq_of_parameters), many=True)
        return self

    async def _run(self, sql: str, parameters: Any, many: bool) -> None:
        await self.close()
        self.description, self.rowcount, self.lastrowid, rows, self._open = await self._connection.run_statement(
            sql, parameters, many
        )
        self._rows.extend(rows)

    async def fetchone(self) -> Any:
        """The next row, or ``None``."""
        if not self._rows:
            await self._more(PREFETCH)
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` (default :attr:`arraysize`) more rows."""
        size = size or self.arraysize
        if len(self._rows) < size:
            await self._more(max(size - len(self._rows), PREFETCH))
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        await self._more(None)
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        """Forget the rows; close the sqlite3 cursor if it is still open."""
        self._rows.clear()
        cursor, self._open = self._open, None
        if cursor is not None:
            await self._connection.call_in_thread(cursor.close)

    async def _more(self, size: int | None) -> None:
        cursor = self._open
        if cursor is None:
            return
        rows, done = await self._connection.call_in_thread(_fetch, cursor, size)
        self._rows.extend(rows)
        if done:
            self._open = None


def _end(conn: sqlite3.Connection, end: Any, query_only: bool) -> None:
    try:
        end(conn)
    finally:
        if query_only:
            conn.execute("PRAGMA query_only = 0")


def _run(conn: sqlite3.Connection, begin: tuple[str, ...], sql: str, parameters: Any, many: bool) -> _Described:
    # In the database thread. A failed BEGIN raises before the statement runs: it never runs
    # outside the transaction it belongs to.
    for statement in begin:
        conn.execute(statement)
    cursor = conn.cursor()
    keep = False
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchmany(PREFETCH) if cursor.description is not None else []
        keep = len(rows) == PREFETCH  # maybe more: the cursor stays open for them
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, cursor if keep else None
    finally:
        if not keep:
            cursor.close()


def _fetch(cursor: sqlite3.Cursor, size: int | None) -> tuple[list[Any], bool]:
    rows = cursor.fetchall() if size is None else cursor.fetchmany(size)
    done = size is None or len(rows) < size
    if done:
        cursor.close()
    return rows, done
