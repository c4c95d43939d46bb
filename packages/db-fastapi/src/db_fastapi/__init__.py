"""db_fastapi: FastAPI dependencies and lifespan for db_core.

- :data:`TransactionDep` (:func:`get_db_transaction`): a session whose
  transaction commits when the endpoint returns, *before* the response is
  sent, so a failed commit is a 5xx and never a 2xx; any exception
  (``HTTPException`` included) rolls it back.
- :data:`SessionDep` (:func:`get_db_session`): a plain request-scoped session
  for endpoints that commit themselves; work left uncommitted at the end is
  rolled back and logged as a warning, never silently dropped.
- :data:`ReadOnlyTransactionDep`: the same as a ``READ ONLY`` transaction on a
  read replica (or the primary: see :func:`db_core.get_sessionmaker`).
- :func:`db_transaction` and :func:`db_session`: the dependencies of a named
  database (``DB_DATABASES__<NAME>__*``), or read-only.
- :func:`db_lifespan`: disposes the engines at shutdown, around the
  application's own lifespan.
- :func:`health_router`: a readiness route (``200``/``503`` within
  ``DB_HEALTH_TIMEOUT_SECONDS``, from :func:`db_core.health`) and a liveness
  route that never touches the database.

A request that finds no free connection within ``DB_POOL_TIMEOUT_SECONDS``
is answered ``503 Service Unavailable`` with ``Retry-After`` by the two
dependencies; :func:`add_exception_handlers` does the same for connections an
endpoint checks out itself (its own :class:`~db_core.UnitOfWork`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from sqlalchemy import TextClause, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from db_core import DBSession, UnitOfWork, close_session, dispose_engine, get_sessionmaker, health, ping
from db_fastapi.__about__ import __version__

__all__ = [
    "ReadOnlyTransactionDep",
    "SessionDep",
    "TransactionDep",
    "__version__",
    "add_exception_handlers",
    "db_lifespan",
    "db_session",
    "db_transaction",
    "get_db_session",
    "get_db_transaction",
    "health_router",
]

logger = logging.getLogger("db_fastapi")

RETRY_AFTER_SECONDS = 1
_WROTE = "db_fastapi.uncommitted_writes"
# A textual statement (``text("INSERT ...")``) that writes: its first keyword, after comments.
# Each comment can only be read one way, so a statement that does not match fails fast.
_WRITE_SQL = re.compile(
    r"\A(?:\s|\(|--[^\n]*(?:\n|\Z)|/\*(?:[^*]|\*(?!/))*\*/)*(?:INSERT|UPDATE|DELETE|MERGE|REPLACE|UPSERT)\b",
    re.IGNORECASE,
)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


Dependency = Callable[[], AsyncIterator[AsyncSession]]
"""A FastAPI dependency that yields a session."""


def db_session(database: str | None = None) -> Dependency:
    """The dependency :func:`get_db_session` of ``database`` (``None``: the ``DB_*`` one)."""

    async def get_db_session() -> AsyncIterator[AsyncSession]:
        """A request-scoped session that the endpoint commits itself.

        Whatever is still uncommitted when the request ends is rolled back, and
        a warning names it so that a forgotten ``commit()`` is never silent.
        """
        session = get_sessionmaker(database)()
        _track_writes(session)
        try:
            await _acquire(session)
            yield session
        finally:
            if session.new or session.dirty or session.deleted or session.info.get(_WROTE):
                logger.warning(
                    "request ended with uncommitted changes, which were rolled back "
                    "(%d new, %d changed, %d deleted objects pending, written: %s); "
                    "call `await session.commit()` or use TransactionDep",
                    len(session.new),
                    len(session.dirty),
                    len(session.deleted),
                    bool(session.info.get(_WROTE)),
                )
            await close_session(session)

    return get_db_session


def db_transaction(database: str | None = None, *, read_only: bool = False) -> Dependency:
    """The dependency :func:`get_db_transaction` of ``database`` (``None``: the ``DB_*`` one), or read-only.

    Use it with ``scope="function"``, so the commit happens before the response
    is sent: ``Annotated[AsyncSession, Depends(db_transaction("analytics"), scope="function")]``.
    """

    async def get_db_transaction() -> AsyncIterator[AsyncSession]:
        """A session inside a :class:`~db_core.UnitOfWork` spanning the endpoint.

        Use it through :data:`TransactionDep`, whose ``scope="function"`` makes
        the commit happen before the response is sent.
        """
        async with UnitOfWork(database=database, read_only=read_only) as session:
            await _acquire(session)
            yield session

    return get_db_transaction


get_db_session = db_session()
get_db_transaction = db_transaction()
_get_db_read_only_transaction = db_transaction(read_only=True)

SessionDep = Annotated[AsyncSession, Depends(get_db_session)]
"""A plain request-scoped :class:`~sqlalchemy.ext.asyncio.AsyncSession` (:func:`get_db_session`)."""

TransactionDep = Annotated[AsyncSession, Depends(get_db_transaction, scope="function")]
"""A session committed when the endpoint returns, before the response (:func:`get_db_transaction`)."""

ReadOnlyTransactionDep = Annotated[AsyncSession, Depends(_get_db_read_only_transaction, scope="function")]
"""A session in a ``READ ONLY`` transaction on a read replica, or the primary (``db_transaction(read_only=True)``)."""


def db_lifespan(app_lifespan: Lifespan | None = None, *, ping_on_startup: bool = False) -> Lifespan:
    """A FastAPI ``lifespan`` that disposes the engine at shutdown.

    ``app_lifespan``, the application's own lifespan, runs inside it (its
    state is passed through). With ``ping_on_startup`` the application fails
    to start when the database cannot be reached.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        try:
            if ping_on_startup:
                await ping()
            if app_lifespan is None:
                yield None
            else:
                async with app_lifespan(app) as state:
                    yield state
        finally:
            await dispose_engine()

    return lifespan


def add_exception_handlers(app: FastAPI) -> None:
    """Answer a pool timeout anywhere in ``app`` with ``503`` and ``Retry-After``, as the dependencies do.

    Needed only for connections that endpoints check out themselves
    (``async with UnitOfWork()`` inside an endpoint, ``get_engine().connect()``).
    The answer is made by the application's handler of ``HTTPException`` (FastAPI's
    ``{"detail": ...}``, or the application's own error body), as the dependencies' is.
    """

    async def busy(request: Request, _exc: Exception) -> Response:
        answer = request.app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
        response: Response = await answer(request, HTTPException(status_code=503, detail=_BUSY, headers=_RETRY_AFTER))
        return response

    # PoolExhaustedError is a TimeoutError: one handler answers it and the pools of connectors' own.
    app.add_exception_handler(sa_exc.TimeoutError, busy)


def health_router(
    *, ready_path: str = "/health/ready", live_path: str = "/health/live", database: str | None = None
) -> APIRouter:
    """Readiness and liveness routes for load balancers and orchestrators: ``app.include_router(health_router())``.

    - ``GET ready_path`` (readiness) runs :func:`db_core.health` on ``database``
      (default: the ``DB_*`` one) and answers within ``DB_HEALTH_TIMEOUT_SECONDS``
      (plus the response's own time): ``200 {"status": "ok", "round_trip_ms": ...,
      "pool": {...}}`` (:func:`db_core.pool_stats`), or ``503 {"status":
      "unavailable", "reason": ..., "pool": {...}}`` when the server cannot be
      reached, does not answer in time, or no pooled connection frees up in time.
      The reason is one line: never a URL, a password or a traceback.
    - ``GET live_path`` (liveness) answers ``200 {"status": "alive"}`` without
      touching the database or the pool: a process whose database is down is
      still alive, and restarting it would not bring the database back.

    Both answers carry ``Cache-Control: no-store``.
    """
    router = APIRouter()

    @router.get(ready_path, summary="Readiness: the database answers", response_class=JSONResponse)
    async def ready() -> JSONResponse:
        result = await health(database)
        if result.ok:
            round_trip_ms = round((result.round_trip_seconds or 0.0) * 1000, 3)
            body: dict[str, Any] = {"status": "ok", "round_trip_ms": round_trip_ms, "pool": result.pool}
            return JSONResponse(body, headers=_NO_STORE)
        body = {"status": "unavailable", "reason": result.error, "pool": result.pool}
        return JSONResponse(body, status_code=503, headers=_NO_STORE)

    @router.get(live_path, summary="Liveness: the process answers", response_class=JSONResponse)
    async def live() -> JSONResponse:
        return JSONResponse({"status": "alive"}, headers=_NO_STORE)

    return router


_NO_STORE = {"Cache-Control": "no-store"}
_BUSY = "the database is busy: no free connection, try again shortly"
_RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}


async def _acquire(session: AsyncSession) -> None:
    """Check a connection out now, so an exhausted pool is a 503 rather than a 500 mid-endpoint."""
    try:
        if isinstance(session, DBSession):
            await session.checkout()  # the endpoint's first statement can still be retried
        else:
            await session.connection()
    except sa_exc.TimeoutError:  # PoolExhaustedError, or a pool of the connector's own
        raise HTTPException(status_code=503, detail=_BUSY, headers=_RETRY_AFTER) from None


def _track_writes(session: AsyncSession) -> None:
    """Note in ``session.info`` whether the open transaction has written anything."""
    sync = session.sync_session

    def flushed(s: Session, _context: Any) -> None:
        s.info[_WROTE] = True

    def executed(state: ORMExecuteState) -> None:
        statement = state.statement
        if (
            state.is_insert
            or state.is_update
            or state.is_delete
            or (isinstance(statement, TextClause) and _WRITE_SQL.match(statement.text))
        ):
            state.session.info[_WROTE] = True

    def ended(s: Session) -> None:
        s.info.pop(_WROTE, None)

    event.listen(sync, "after_flush", flushed)
    event.listen(sync, "do_orm_execute", executed)
    event.listen(sync, "after_commit", ended)
    event.listen(sync, "after_rollback", ended)
