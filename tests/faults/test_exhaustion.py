"""Pool exhaustion and statement timeouts: fast, clear failures, a 503 through FastAPI, and no leak."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from starlette.exceptions import HTTPException as StarletteHTTPException

from db_core import (
    DatabaseSettings,
    PoolExhaustedError,
    UnitOfWork,
    configure,
    dispose_engine,
    get_engine,
)
from db_fastapi import SessionDep, TransactionDep, add_exception_handlers, db_lifespan
from dbtests.http import running_uvicorn
from dbtests.leaks import FaultReport
from dbtests.servers import BACKENDS, backend_settings

EXHAUSTED_WITHIN = 1.0  # the bound for a 0.5 s pool timeout
STATEMENT_STOPPED_WITHIN = 1.5  # the bound for a 10 s sleep under a 1 s statement timeout
REQUESTS = 1000
CONCURRENCY = 20


def pool_of(backend: str) -> int:
    # SQLite takes the write lock at BEGIN: a second holder would wait on the lock, not on the pool.
    return 1 if backend == "sqlite" else 2


@pytest.fixture(params=BACKENDS)
async def small_pool(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    backend = request.param
    settings = backend_settings(
        request, backend, tmp_path, pool_size=pool_of(backend), max_overflow=0, pool_timeout_seconds=0.5
    )
    configure(settings)
    yield settings
    await dispose_engine()
    configure(None)


async def hold_connections(count: int, release: asyncio.Event) -> list[asyncio.Task[None]]:
    held = asyncio.Semaphore(0)

    async def holder() -> None:
        async with UnitOfWork() as session:
            await session.execute(text("SELECT 1"))
            held.release()
            await release.wait()

    tasks = [asyncio.create_task(holder()) for _ in range(count)]
    for _ in range(count):
        await held.acquire()
    return tasks


async def test_the_unit_of_work_after_the_pool_fails_fast_with_pool_exhausted(
    small_pool: DatabaseSettings, fault_report: FaultReport
) -> None:
    backend = small_pool.type or ""
    release = asyncio.Event()
    holders = await hold_connections(pool_of(backend), release)
    tries = 5
    for _ in range(tries):
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError) as info:
            async with UnitOfWork() as session:
                await session.execute(text("SELECT 1"))
        assert time.monotonic() - started < EXHAUSTED_WITHIN
    # Still SQLAlchemy's pool timeout for code that catches that, and it says what to change.
    assert isinstance(info.value, sa_exc.TimeoutError)
    for variable in ("DB_POOL_TIMEOUT_SECONDS=0.5", "DB_POOL_SIZE", "DB_MAX_OVERFLOW"):
        assert variable in str(info.value)
    release.set()
    await asyncio.gather(*holders)
    async with UnitOfWork() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    fault_report.add("pool exhausted (2+0, 0.5 s)", backend, injected=tries, recovered=tries)


def busy_app(held: threading.Semaphore, release: threading.Event, *, error_body: bool) -> FastAPI:
    """``/hold`` keeps its connection until ``release`` is set (the server runs in another thread).

    ``error_body``: the application answers every ``HTTPException`` with an error body of its own.
    """
    app = FastAPI(lifespan=db_lifespan())
    add_exception_handlers(app)
    if error_body:

        @app.exception_handler(StarletteHTTPException)
        async def own_errors(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
            return JSONResponse({"errors": [exc.detail]}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/hold")
    async def hold(session: TransactionDep) -> dict[str, int]:
        await session.execute(text("SELECT 1"))
        held.release()
        await asyncio.to_thread(release.wait, 30)
        return {"held": 1}

    @app.get("/dependency")
    async def dependency(session: TransactionDep) -> dict[str, int]:
        return {"value": (await session.execute(text("SELECT 1"))).scalar_one()}

    @app.get("/own")
    async def own() -> dict[str, int]:
        # A unit of work the endpoint opens itself: add_exception_handlers answers its pool timeout.
        async with UnitOfWork() as session:
            return {"value": (await session.execute(text("SELECT 1"))).scalar_one()}

    return app


@pytest.mark.parametrize("error_body", [False, True], ids=["fastapi-errors", "own-errors"])
async def test_an_exhausted_pool_is_a_503_with_retry_after(
    small_pool: DatabaseSettings, fault_report: FaultReport, error_body: bool
) -> None:
    backend = small_pool.type or ""
    held, release = threading.Semaphore(0), threading.Event()
    with running_uvicorn(busy_app(held, release, error_body=error_body)) as base_url:
        async with httpx2.AsyncClient(base_url=base_url, timeout=10) as client:
            holds = [asyncio.create_task(client.get("/hold")) for _ in range(pool_of(backend))]
            for _ in holds:
                assert await asyncio.to_thread(held.acquire, timeout=10), "a /hold request got no connection"
            answers = []
            for path in ("/dependency", "/own"):
                started = time.monotonic()
                answer = await client.get(path)
                answers.append((path, answer.status_code, time.monotonic() - started))
                assert answer.status_code == 503, (path, answer.text)
                assert answer.headers["Retry-After"] == "1"
                # In the application's error body, whichever path ran out of connections.
                message = answer.json()["errors"][0] if error_body else answer.json()["detail"]
                assert "busy" in message
            assert max(seconds for *_, seconds in answers) < EXHAUSTED_WITHIN, answers
            release.set()
            assert [h.status_code for h in await asyncio.gather(*holds)] == [200] * pool_of(backend)
            # Once the connections are back, both paths work.
            for path in ("/dependency", "/own"):
                assert (await client.get(path)).json() == {"value": 1}
    fault_report.add("pool exhausted through FastAPI (503)", backend, injected=2, recovered=2)


def items_app(schema: SimpleNamespace) -> FastAPI:
    app = FastAPI(lifespan=db_lifespan())
    user = schema.User

    @app.post("/tx/{i}", status_code=201)
    async def with_transaction(i: int, session: TransactionDep) -> dict[str, int]:
        session.add(user(name=f"u{i}"))
        await session.flush()
        if i % 40 == 0:
            raise HTTPException(status_code=409, detail="refused after writing")
        if i % 40 == 20:
            raise RuntimeError("a bug after writing")
        return {"i": i}

    @app.post("/session/{i}", status_code=201)
    async def with_session(i: int, session: SessionDep) -> dict[str, int]:
        session.add(user(name=f"u{i}"))
        await session.flush()
        if i % 40 == 1:
            raise HTTPException(status_code=409, detail="refused before committing")
        if i % 40 == 21:
            raise RuntimeError("a bug before committing")
        await session.commit()
        return {"i": i}

    return app


async def test_a_thousand_requests_with_ten_percent_failing_leave_nothing_behind(
    schema: SimpleNamespace, db: DatabaseSettings, fault_report: FaultReport, caplog: pytest.LogCaptureFixture
) -> None:
    backend = db.type or ""
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    with running_uvicorn(items_app(schema)) as base_url:
        async with httpx2.AsyncClient(base_url=base_url, timeout=30) as client:

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    path = f"/tx/{i}" if i % 2 == 0 else f"/session/{i}"
                    # uvicorn drops the keep-alive connection of a request whose app raised; a
                    # request sent on it meanwhile would fail in the client, not in the server.
                    headers = {"Connection": "close"} if i % 40 in (20, 21) else {}
                    statuses[i] = (await client.post(path, headers=headers)).status_code

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    failing = {i for i in range(REQUESTS) if i % 20 in (0, 1)}
    assert len(failing) == REQUESTS // 10
    assert {i for i, status in statuses.items() if status != 201} == failing
    assert {statuses[i] for i in failing} == {409, 500}
    async with UnitOfWork() as session:
        stored = set(await session.scalars(select(schema.User.name)))
    expected = {f"u{i}" for i in range(REQUESTS) if i not in failing}
    assert stored == expected  # every answered 201 is stored, nothing of a failed request is
    fault_report.add(
        "requests raising mid-transaction (10 %)",
        backend,
        injected=len(failing),
        recovered=len(failing),
        rows_lost=len(expected - stored),
    )


STATEMENT = {
    "postgres": "SELECT pg_sleep(10)",
    "mysql": "SELECT SLEEP(10)",
    # Far more than 10 s of work for SQLite, which has no sleep().
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000000) SELECT count(*) FROM c",
}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_statement_timeout_stops_a_long_statement(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, fault_report: FaultReport
) -> None:
    configure(backend_settings(request, backend, tmp_path, statement_timeout_seconds=1, pool_size=1))
    try:
        tries = 3
        for _ in range(tries):
            started = time.monotonic()
            with pytest.raises(
                sa_exc.DBAPIError, match=r"statement timeout|max_statement_time|DB_STATEMENT_TIMEOUT_SECONDS=1"
            ):
                async with UnitOfWork() as session:
                    await session.execute(text(STATEMENT[backend]))
            assert time.monotonic() - started < STATEMENT_STOPPED_WITHIN
            # The server stopped the statement, not the connection: the pooled connection still works.
            async with UnitOfWork() as session:
                assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]
        fault_report.add("10 s statement, 1 s statement timeout", backend, injected=tries, recovered=tries)
    finally:
        await dispose_engine()
        configure(None)
