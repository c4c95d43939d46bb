"""``DBSession``: the ``AsyncSession`` that :func:`~db_core.get_sessionmaker` makes.

Two tasks awaiting the same session at once (``asyncio.gather`` over one
session, a session shared with a background task) interleave their
statements on one connection. Depending on the driver that is a protocol
error ("another operation is in progress"), a hang, or worse, silently
mixed transactions. Here the second task is refused at once with
:class:`~db_core.errors.ConcurrentUseError`, on every backend.

And a pooled connection can die unnoticed between its checkout check and
its first statement (the server ends it a moment before): that first
statement is retried once on a new connection, since nothing had run in its
transaction yet.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from db_core.errors import ConcurrentUseError

# The session.info key under which a routed (read-only) session keeps its router (db_core.routing).
ROUTER = "db_core.router"

__all__ = ["DBSession"]

logger = logging.getLogger("db_core")

# The methods that run one statement the caller gave: retried as a transaction's first.
_STATEMENTS = frozenset({"execute", "get", "get_one", "scalar", "scalars", "stream", "stream_scalars"})

# Every AsyncSession method that awaits the database.
_GUARDED = (
    "close",
    "commit",
    "connection",
    "delete",
    "execute",
    "flush",
    "get",
    "get_one",
    "invalidate",
    "merge",
    "refresh",
    "rollback",
    "run_sync",
    "scalar",
    "scalars",
    "stream",
    "stream_scalars",
)


class DBSession(AsyncSession):
    """An :class:`~sqlalchemy.ext.asyncio.AsyncSession` that one task uses at a time.

    While a task awaits one of its methods, another task calling one gets
    :class:`~db_core.errors.ConcurrentUseError` instead of a driver error.
    The same task may nest calls (``run_sync`` and the like).

    The first statement of a transaction (``execute``, ``scalar``, ``get``...
    on a session with no transaction and no pending changes) that fails
    because its connection turns out to be dead is run again, once, on a new
    connection: that transaction had run nothing else, and the server rolled
    back whatever part of it ran. Not under ``AUTOCOMMIT``, where it may have
    committed.
    """

    _db_user: asyncio.Task[Any] | None = None
    _db_depth = 0
    # The transaction holds a connection from checkout() and has run nothing on it.
    _db_only_checked_out = False

    async def checkout(self) -> None:
        """Take this session's connection from the pool now, rather than at its first statement.

        A full pool then fails here (:class:`~db_core.errors.PoolExhaustedError`),
        before any work is done. The first statement afterwards is still a
        transaction's first: it is retried on a new connection if this one
        turns out to be dead.
        """
        fresh = not self.in_transaction() or self._db_only_checked_out
        while True:
            try:
                # run_sync, not connection(): no AsyncConnection proxy to build for a connection nobody sees.
                await self.run_sync(Session.connection)
                break
            except Exception as exc:
                if not (fresh and await self._db_failover(exc)):
                    raise
        self._db_only_checked_out = fresh

    async def _db_failover(self, exc: Exception) -> bool:
        """Move a read-only session whose replica could not be reached to another server, if it has a router."""
        router = self.info.get(ROUTER)
        return router is not None and bool(await router.failover(self, exc))

    def _db_may_retry(self) -> bool:
        """Whether a statement now would be the first of a transaction, with nothing else to lose."""
        sync = self.sync_session
        if (sync.in_transaction() and not self._db_only_checked_out) or sync.new or sync.dirty or sync.deleted:
            return False
        bind = sync.bind
        if not isinstance(bind, Engine):
            # Bound to a connection (an outer transaction, as in tests), or to several engines: not known.
            return False
        options = (bind.get_execution_options().get("isolation_level"), getattr(bind.dialect, "isolation_level", None))
        return "AUTOCOMMIT" not in options


def _guard(name: str, method: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
    retried = name in _STATEMENTS

    @functools.wraps(method)
    async def guarded(self: DBSession, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        user = self._db_user
        if user is not None and user is not task and not user.done():
            raise ConcurrentUseError(
                f"session.{name}() called while task {user.get_name()!r} is still using this session: "
                "a session serves one task at a time. Give each concurrent task its own session "
                "(its own `async with UnitOfWork()`), or await the calls one after another"
            )
        self._db_user = task
        self._db_depth += 1
        try:
            if not (retried and self._db_depth == 1 and self._db_may_retry()):
                return await method(self, *args, **kwargs)
            # Inline rather than in a helper coroutine: every await in the statement passes
            # through each coroutine frame above it.
            try:
                return await method(self, *args, **kwargs)
            except DBAPIError as exc:
                # A statement, not a connect, failed on a connection now invalidated: dead on arrival.
                if not (exc.connection_invalidated and exc.statement is not None):
                    raise
                logger.info(
                    "session.%s(): the connection was lost before its first statement completed (%s); "
                    "retrying it on a new connection",
                    name,
                    type(exc.orig).__name__,
                )
                failed_over = await self._db_failover(exc)  # a replica that went away: another server
            if not failed_over:
                await AsyncSession.rollback(self)  # discards the dead connection; nothing else had happened
            return await method(self, *args, **kwargs)
        finally:
            self._db_depth -= 1
            if self._db_depth == 0:
                self._db_user = None
                self._db_only_checked_out = False

    return guarded


for _name in _GUARDED:
    _method = getattr(AsyncSession, _name, None)
    if _method is not None:  # get_one() is newer than SQLAlchemy 2.0.0
        setattr(DBSession, _name, _guard(_name, _method))
