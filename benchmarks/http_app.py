"""W5's application: ``GET /items/{id}``, one primary-key read per request, for uvicorn.

``uvicorn http_app:app --app-dir benchmarks``, configured by the environment:

- ``BENCH_CONTENDER``: ``raw``, ``sqlalchemy``, ``seed`` or ``db`` (as in :mod:`contenders`);
- ``BENCH_BACKEND``: ``postgres``, ``mysql`` or ``sqlite``;
- ``BENCH_URL``: a SQLAlchemy URL such as ``postgresql+asyncpg://postgres@127.0.0.1:5432/dbbench``.

Every contender runs the same statement in a transaction of its own per request and answers
``{"id": ..., "name": ...}`` (the SQLAlchemy ones and db: 404 when there is no such row; the
load only asks for rows that exist).
"""

# No `from __future__ import annotations`: FastAPI must see the local dependencies in the signatures.
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from backends import Backend
from contenders import Contender, started
from db_core import DatabaseSettings, configure
from db_fastapi import TransactionDep, db_lifespan

CONTENDERS = ("raw", "sqlalchemy", "seed", "db")
BACKENDS = ("postgres", "mysql", "sqlite")
POOL_SIZE = 10
MAX_OVERFLOW = 20
GET = text("SELECT id, name FROM bench_items WHERE id = :id")


def _item(row: Any, item_id: int) -> dict[str, Any]:
    """The response body for ``row``, or 404."""
    if row is None:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    return {"id": row[0], "name": row[1]}


def raw_app(backend: str, url: str) -> FastAPI:
    """The driver alone, exactly as :mod:`contenders` runs it: its own pool, ``BEGIN``/``COMMIT`` around the read."""
    running: dict[str, Contender] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with started("raw", Backend.from_url(backend, url), POOL_SIZE, MAX_OVERFLOW) as contender:
            running["raw"] = contender
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": await running["raw"].get(item_id)}

    return app


def session_app(url: str, *, seed: bool) -> FastAPI:
    """Bare SQLAlchemy (``seed``: with the original design's settings), a session per request."""
    engine_args: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}
    session_args: dict[str, Any] = {}
    if seed:
        engine_args.update(pool_timeout=30, pool_recycle=1800, pool_pre_ping=True)
        session_args["expire_on_commit"] = False
    engine = create_async_engine(url, **engine_args)
    sessionmaker = async_sessionmaker(engine, **session_args)

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessionmaker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    # scope="function": the transaction ends before the response is sent, as with db_fastapi's TransactionDep.
    session_dep = Depends(get_session, scope="function")

    @app.get("/items/{item_id}")
    async def get_item(item_id: int, session: Annotated[AsyncSession, session_dep]) -> dict[str, Any]:
        return _item((await session.execute(GET, {"id": item_id})).first(), item_id)

    return app


def library_app(backend: str, url: str) -> FastAPI:
    """The library under test: :data:`db_fastapi.TransactionDep` and :func:`db_fastapi.db_lifespan`."""
    configure(
        DatabaseSettings(
            url=url,
            # Only what is given here: neither a .env in the working directory nor stray DB_* variables.
            _env_file=None,
            # SQLite keeps the library's own pool (one connection: one writer at a time), as a user gets it.
            **({} if backend == "sqlite" else {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}),
        )
    )
    app = FastAPI(lifespan=db_lifespan())

    @app.get("/items/{item_id}")
    async def get_item(item_id: int, session: TransactionDep) -> dict[str, Any]:
        return _item((await session.execute(GET, {"id": item_id})).first(), item_id)

    return app


def create_app(contender: str, backend: str, url: str) -> FastAPI:
    """The application of ``contender`` on ``backend`` at ``url``."""
    if contender not in CONTENDERS:
        raise ValueError(f"BENCH_CONTENDER={contender!r}: expected one of {', '.join(CONTENDERS)}")
    if backend not in BACKENDS:
        raise ValueError(f"BENCH_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
    if contender == "raw":
        return raw_app(backend, url)
    if contender == "db":
        return library_app(backend, url)
    return session_app(url, seed=contender == "seed")


def _from_environment() -> FastAPI:
    try:
        contender, backend, url = (os.environ[name] for name in ("BENCH_CONTENDER", "BENCH_BACKEND", "BENCH_URL"))
    except KeyError as exc:
        raise RuntimeError(
            f"{exc.args[0]} is not set: http_app needs BENCH_CONTENDER, BENCH_BACKEND and BENCH_URL"
        ) from None
    return create_app(contender, backend, url)


app = _from_environment()
