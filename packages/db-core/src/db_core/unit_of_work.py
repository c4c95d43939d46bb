"""``UnitOfWork``: one transaction, committed on success and always closed."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Coroutine
from contextlib import AbstractContextManager, ExitStack, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

from db_core.engine import AsyncSessionMaker, get_sessionmaker, has_replicas
from db_core.errors import UnitOfWorkError
from db_core.routing import note_write
from db_core.session import ROUTER, DBSession
from db_core.settings import DEFAULT_DATABASE

__all__ = ["UnitOfWork", "close_session", "in_unit_of_work"]

logger = logging.getLogger("db_core")


@dataclass(frozen=True)
class _Active:
    session: AsyncSession
    # What a unit of work opened inside it must share to join it: its sessionmaker if one was
    # given, else its database's name (a read-only unit joins the read-write unit around it).
    key: object
    task: asyncio.Task[Any] | None
    read_only: bool


# The innermost open unit of work of the current task; a unit of work opened
# while one is active in the same task becomes a savepoint in its session.
_current: ContextVar[_Active | None] = ContextVar("db_core_unit_of_work", default=None)


def in_unit_of_work() -> bool:
    """Whether the current task has a :class:`UnitOfWork` open."""
    active = _current.get()
    return active is not None and active.task is asyncio.current_task()


class UnitOfWork:
    """An async context manager around one transaction.

    ``async with UnitOfWork() as session:`` commits when the block ends
    normally, rolls back when it raises, and always closes the session and
    returns its connection to the pool, also when the task is cancelled (a
    cancellation that arrives during COMMIT lets the commit finish first). A
    failure while rolling back or closing never replaces the exception that
    caused it (it is logged and noted on that exception instead).

    A ``UnitOfWork`` entered while another is open in the same task (and for
    the same sessionmaker) shares its session inside a SAVEPOINT: if the inner
    block raises, only its own work is undone. An instance cannot be entered
    again while it is open; it may be reused after it has ended.

    ``begin()``/``end()`` are the explicit form of the same, for code that cannot
    use ``async with``.

    ``database`` names a database configured by ``DB_DATABASES__<NAME>__*``
    (default: the ``DB_*`` one). ``read_only=True`` runs the unit as a
    ``READ ONLY`` transaction on one usable replica for its whole life (or on
    the primary: see :func:`~db_core.get_sessionmaker`); a read-only unit
    opened inside a read-write one of the same database joins it, so it sees
    its writes. A read-write unit that commits sends the task's read-only
    units to the primary for ``DB_READ_YOUR_WRITES_SECONDS``.
    """

    def __init__(
        self,
        sessionmaker: AsyncSessionMaker | None = None,
        *,
        database: str | None = None,
        read_only: bool = False,
    ) -> None:
        if sessionmaker is not None and database is not None:
            raise UnitOfWorkError("give UnitOfWork a sessionmaker or a database name, not both")
        self._sessionmaker = sessionmaker
        self._database = database.lower() if database else DEFAULT_DATABASE
        self._read_only = read_only
        self._session: AsyncSession | None = None
        self._savepoint: AsyncSessionTransaction | None = None
        self._outer: _Active | None = None
        self._open = False

    @property
    def session(self) -> AsyncSession:
        """The session of the open unit of work; :class:`UnitOfWorkError` when it is not open."""
        if self._session is None:
            raise UnitOfWorkError("this UnitOfWork is not open: use `async with` or `await begin()` first")
        return self._session

    @property
    def is_open(self) -> bool:
        """Whether the unit of work has begun and not yet ended."""
        return self._open

    @property
    def is_nested(self) -> bool:
        """Whether this unit of work is a SAVEPOINT inside an outer one."""
        return self._savepoint is not None

    async def __aenter__(self) -> AsyncSession:
        if self._open:
            raise UnitOfWorkError(
                "this UnitOfWork is already open; use a new UnitOfWork() for another "
                "unit of work (one opened inside an open one becomes a savepoint)"
            )
        self._open = True
        try:
            key = self._sessionmaker or self._database
            task = asyncio.current_task()
            outer = _current.get()
            if outer is not None and outer.task is task and outer.key == key:
                if outer.read_only and not self._read_only:
                    raise UnitOfWorkError(
                        "a read-write UnitOfWork cannot be opened inside a read-only one of the same database: "
                        "open it outside, or make the outer one read-write"
                    )
                session = outer.session
                self._savepoint = await session.begin_nested()
                read_only = outer.read_only
            else:
                sessionmaker = self._sessionmaker or get_sessionmaker(self._database, read_only=self._read_only)
                session = sessionmaker()
                read_only = self._read_only
                if ROUTER in session.info and isinstance(session, DBSession):
                    # Connect now: a replica that cannot be reached is left for another before any work.
                    await _checkout(session)
        except BaseException:
            self._open = False
            raise
        self._session = session
        self._outer = outer
        _current.set(_Active(session, key, task, read_only))
        return session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._open:
            return
        session, savepoint = self._session, self._savepoint
        assert session is not None
        try:
            if savepoint is not None:
                await self._end_savepoint(savepoint, exc)
            else:
                await self._end_session(session, exc)
        finally:
            _current.set(self._outer)
            self._session, self._savepoint, self._outer = None, None, None
            self._open = False

    async def begin(self) -> Self:
        """Open the unit of work without ``async with``; the session is ``self.session``."""
        await self.__aenter__()
        return self

    async def end(self, exc: BaseException | None = None) -> None:
        """Close what :meth:`begin` opened: commit, or roll back if ``exc`` is given."""
        await self.__aexit__(type(exc) if exc is not None else None, exc, exc.__traceback__ if exc else None)

    async def _end_session(self, session: AsyncSession, exc: BaseException | None) -> None:
        if exc is None:
            # Once COMMIT is on its way its outcome must be known: a cancellation
            # arriving meanwhile waits for it and the release, then propagates.
            await run_to_completion(_commit_and_release(session))
            if not self._read_only and self._sessionmaker is None and has_replicas(self._database):
                note_write(self._database)
        else:
            await _release(session, exc, rollback=True)

    async def _end_savepoint(self, savepoint: AsyncSessionTransaction, exc: BaseException | None) -> None:
        if exc is None:
            try:
                await savepoint.commit()
                return
            except BaseException as commit_error:
                exc = commit_error
                if savepoint.is_active:
                    await _quietly(savepoint.rollback(), exc, "rolling back the savepoint")
                raise
        if savepoint.is_active:
            await _quietly(savepoint.rollback(), exc, "rolling back the savepoint")


async def _checkout(session: DBSession) -> None:
    try:
        await session.checkout()
    except BaseException:
        await close_session(session)
        raise


async def close_session(session: AsyncSession) -> None:
    """Roll back and close ``session``, finishing even if the calling task is cancelled meanwhile."""
    await _release(session, None, rollback=True)


async def _commit_and_release(session: AsyncSession) -> None:
    try:
        await session.commit()
    except BaseException as commit_error:
        await _quietly(_release_now(session, rollback=True), commit_error, "rolling back and closing the session")
        raise
    await _release_now(session, rollback=False)


async def _release(session: AsyncSession, exc: BaseException | None, *, rollback: bool) -> None:
    """Roll back (if asked) and close ``session``, whatever happens to the calling task."""
    if exc is None:
        await run_to_completion(_release_now(session, rollback=rollback))
    else:
        await _quietly(_release_now(session, rollback=rollback), exc, "rolling back and closing the session")


async def _release_now(session: AsyncSession, *, rollback: bool) -> None:
    if not rollback and not session.in_transaction():
        # After COMMIT the connection is back in the pool: closing only forgets the objects,
        # which needs no I/O and so no trip through a greenlet.
        session.sync_session.close()
        return
    try:
        if rollback:
            await session.rollback()
    finally:
        try:
            await session.close()
        except BaseException:
            # The connection is in an unknown state: discard it rather than pool it.
            await session.invalidate()
            raise


async def _quietly(coro: Coroutine[Any, Any, None], exc: BaseException, doing: str) -> None:
    """Run cleanup after ``exc``; a failure of its own is logged and noted on ``exc``, never raised."""
    try:
        await run_to_completion(coro)
    except asyncio.CancelledError:
        # The cleanup did finish; the caller was cancelled meanwhile. The original exception wins.
        return
    except Exception as cleanup_error:
        logger.warning(
            "%s after %s failed: %s: %s", doing, type(exc).__name__, type(cleanup_error).__name__, cleanup_error
        )
        exc.add_note(f"db_core: {doing} afterwards also failed: {type(cleanup_error).__name__}: {cleanup_error}")


async def run_to_completion(coro: Coroutine[Any, Any, None]) -> None:
    """Await ``coro`` to its end even if the caller is cancelled meanwhile, then re-raise the cancellation.

    Cleanup that is cut short leaves a connection checked out or inside a
    transaction. If ``coro`` fails, its error wins over the cancellation: a
    caller must learn that a COMMIT failed, not that it was cancelled. The
    cancellation re-raised is the very one caught, which anyio's cancel
    scopes need to recognise their own.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(coro)
    cancellation: asyncio.CancelledError | None = None
    with ExitStack() as shield:
        while not task.done():
            # Awaiting a future of our own, not the task: a cancellation cancels only the waiting.
            waiter = loop.create_future()
            wake = functools.partial(_wake, waiter)
            task.add_done_callback(wake)
            try:
                await waiter
            except asyncio.CancelledError as exc:
                task.remove_done_callback(wake)
                if cancellation is None:
                    # Entered only now, with no await since the cancellation: a scope costs
                    # more than the rest of this wait, and is needed only once cancelled.
                    shield.enter_context(_anyio_shield())
                cancellation = exc
    if cancellation is not None and (task.cancelled() or task.exception() is None):
        raise cancellation
    task.result()


def _wake(waiter: asyncio.Future[None], _task: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _anyio_shield() -> AbstractContextManager[Any]:
    """A shielding anyio cancel scope when anyio is in use, else nothing.

    An anyio scope, once cancelled, cancels its task again at every turn of
    the loop: without a shield the wait above would spin until ``coro`` ends.
    Entered in the task the moment it is cancelled, the shield moves the task
    out of the cancelled scope before the scope cancels it again. Where anyio
    was never imported, no anyio scope can be waiting either.
    """
    anyio = sys.modules.get("anyio")
    return anyio.CancelScope(shield=True) if anyio is not None else nullcontext()
