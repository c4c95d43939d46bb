"""``DBSession``: the ``AsyncSession`` that :func:`~db_core.get_sessionmaker` makes.

Two tasks awaiting the same session at once (``asyncio.gather`` over one
session, a session shared with a background task) interleave their
statements on one connection. Depending on the driver that is a protocol
error ("another operation is in progress"), a hang, or worse, silently
mixed transactions. Here the second task is refused at once with
:class:`~db_core.errors.ConcurrentUseError`, on every backend.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db_core.errors import ConcurrentUseError

__all__ = ["DBSession"]

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
    """

    _db_user: asyncio.Task[Any] | None = None
    _db_depth = 0


def _guard(name: str, method: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
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
            return await method(self, *args, **kwargs)
        finally:
            self._db_depth -= 1
            if self._db_depth == 0:
                self._db_user = None

    return guarded


for _name in _GUARDED:
    _method = getattr(AsyncSession, _name, None)
    if _method is not None:  # get_one() is newer than SQLAlchemy 2.0.0
        setattr(DBSession, _name, _guard(_name, _method))
