"""db_fastapi's dependencies and lifespan at the ASGI level: real servers, no mocks.

The app runs under Starlette's ``TestClient`` (its own event loop, in a
thread) or under ``httpx2.ASGITransport`` (the test's own loop); the
databases are the real PostgreSQL, MariaDB and SQLite of the root conftest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text
from sqlalchemy.pool import QueuePool

import db_core.engine
from db_core import DatabaseSettings, UnitOfWork, configure, dispose_engine, get_engine
from db_fastapi import SessionDep, TransactionDep, db_lifespan
from dbtests.servers import BACKENDS, backend_settings


async def stored_names(schema: SimpleNamespace) -> list[str]:
    """The user names committed in the database, read on the test's own loop."""
    async with UnitOfWork() as session:
        return list((await session.scalars(select(schema.User.name).order_by(schema.User.name))).all())


def users_app(schema: SimpleNamespace) -> FastAPI:
    """GET /users lists the names (SessionDep); POST /users/{name} adds one (TransactionDep)."""
    app = FastAPI()
    user = schema.User

    @app.get("/users")
    async def list_users(session: SessionDep) -> list[str]:
        return list((await session.scalars(select(user.name).order_by(user.name))).all())

    @app.post("/users/{name}", status_code=201)
    async def add_user(name: str, session: TransactionDep, flush: bool = False, fail: str = "") -> dict[str, str]:
        session.add(user(name=name))
        if flush:
            await session.flush()  # the INSERT reaches the server inside the open transaction
        if fail == "http":
            raise HTTPException(status_code=409, detail="conflict")
        if fail == "error":
            raise ValueError("the endpoint failed")
        return {"name": name}

    @app.post("/pair/{first}/{second}", status_code=201)
    async def add_pair(first: str, second: str, session: TransactionDep) -> dict[str, str]:
        # No flush: both INSERTs are sent by the commit that runs after this returns.
        session.add_all([user(name=first), user(name=second)])
        return {"first": first, "second": second}

    return app


# 1. A commit that fails after the endpoint returned is a 5xx, never a 2xx.


@pytest.fixture
def postgres_settings(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    # A plain fixture: the server fixture it starts runs asyncio.run(), which needs no running loop.
    return backend_settings(request, "postgres", tmp_path)


@pytest.fixture
async def deferred_table(postgres_settings: DatabaseSettings) -> AsyncIterator[str]:
    """On PostgreSQL, a table whose unique constraint is only checked at COMMIT."""
    configure(postgres_settings)
    try:
        async with get_engine().begin() as conn:
            await conn.exec_driver_sql("DROP TABLE IF EXISTS deferred_t")
            await conn.exec_driver_sql(
                "CREATE TABLE deferred_t (id serial PRIMARY KEY, v int, "
                "CONSTRAINT deferred_u UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)"
            )
        yield "deferred_t"
        async with get_engine().begin() as conn:
            await conn.exec_driver_sql("DROP TABLE deferred_t")
    finally:
        await dispose_engine()
        configure(None)


async def test_failed_commit_of_deferred_constraint_is_5xx_and_stores_nothing(deferred_table: str) -> None:
    app = FastAPI()
    returned: list[int] = []

    @app.post("/values/{v}")
    async def insert_value(v: int, session: TransactionDep, twice: bool = True) -> dict[str, int]:
        await session.execute(text("INSERT INTO deferred_t (v) VALUES (:v)"), {"v": v})
        if twice:
            await session.execute(text("INSERT INTO deferred_t (v) VALUES (:v)"), {"v": v})
        # Both INSERTs succeeded: the duplicate only fails at COMMIT, after this return.
        returned.append(v)
        return {"v": v}

    @app.get("/values")
    async def list_values(session: SessionDep) -> list[int]:
        return list((await session.scalars(text("SELECT v FROM deferred_t ORDER BY v"))).all())

    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.post("/values/1")
        assert returned == [1], "the endpoint itself must have returned normally"
        assert 500 <= failed.status_code < 600, f"a failed commit answered {failed.status_code}: {failed.text}"
        assert client.get("/values").json() == []
        # The same endpoint without the duplicate commits: the 5xx came from the commit.
        ok = client.post("/values/2", params={"twice": "false"})
        assert ok.status_code == 200, ok.text
        assert client.get("/values").json() == [2]
        # The connection that saw the failed COMMIT went back to the pool in a usable state.
        assert client.post("/values/1").status_code >= 500
        assert client.post("/values/3", params={"twice": "false"}).status_code == 200

    async with get_engine().connect() as conn:
        assert list((await conn.execute(text("SELECT v FROM deferred_t ORDER BY v"))).scalars()) == [2, 3]


async def test_failed_commit_is_5xx_on_every_backend(schema: SimpleNamespace) -> None:
    """A unique violation sent by the commit's flush: the other row of that transaction is not stored either."""
    with TestClient(users_app(schema), raise_server_exceptions=False) as client:
        assert client.post("/users/ada").status_code == 201
        failed = client.post("/pair/grace/ada")
        assert 500 <= failed.status_code < 600, f"a failed commit answered {failed.status_code}: {failed.text}"
        assert client.get("/users").json() == ["ada"]
        assert client.post("/pair/grace/alan").status_code == 201
    assert await stored_names(schema) == ["ada", "alan", "grace"]


# 2. An exception rolls the transaction back; a normal return commits it before the next request.


@pytest.mark.parametrize("flush", [False, True], ids=["pending", "flushed"])
@pytest.mark.parametrize(("fail", "status"), [("http", 409), ("error", 500)], ids=["HTTPException", "ValueError"])
async def test_exception_in_endpoint_stores_nothing(
    schema: SimpleNamespace, flush: bool, fail: str, status: int
) -> None:
    with TestClient(users_app(schema), raise_server_exceptions=False) as client:
        response = client.post("/users/ada", params={"flush": flush, "fail": fail})
        assert response.status_code == status, response.text
        assert client.get("/users").json() == []
        # The name is free: nothing of the failed request survived, not even a lock.
        assert client.post("/users/ada", params={"flush": flush}).status_code == 201
        assert client.get("/users").json() == ["ada"]
    assert await stored_names(schema) == ["ada"]


async def test_normal_return_commits_before_the_next_request(schema: SimpleNamespace) -> None:
    with TestClient(users_app(schema)) as client:
        for name in ("ada", "alan", "grace"):
            assert client.post(f"/users/{name}").status_code == 201
            assert name in client.get("/users").json()
        assert client.post("/users/edsger", params={"flush": True}).status_code == 201
        assert client.get("/users").json() == ["ada", "alan", "edsger", "grace"]
    assert await stored_names(schema) == ["ada", "alan", "edsger", "grace"]


# 3. SessionDep: what the endpoint forgets to commit is rolled back, with a warning.


def session_app(schema: SimpleNamespace) -> FastAPI:
    app = FastAPI()
    user = schema.User

    @app.post("/forgetful/{name}")
    async def forgetful(name: str, session: SessionDep, how: str) -> dict[str, str]:
        if how == "add":
            session.add(user(name=name))
        elif how == "flush":
            session.add(user(name=name))
            await session.flush()
        elif how == "core-insert":
            await session.execute(insert(user).values(name=name))
        elif how == "text-insert":
            await session.execute(text("/* raw SQL */ INSERT INTO users (name) VALUES (:name)"), {"name": name})
        elif how == "commit-then-add":
            session.add(user(name=f"{name}-committed"))
            await session.commit()
            session.add(user(name=name))
        else:  # pragma: no cover
            raise AssertionError(how)
        return {"name": name}

    @app.post("/careful/{name}")
    async def careful(name: str, session: SessionDep) -> dict[str, str]:
        session.add(user(name=name))
        await session.commit()
        return {"name": name}

    @app.get("/users")
    async def list_users(session: SessionDep) -> list[str]:
        return list((await session.scalars(select(user.name).order_by(user.name))).all())

    @app.get("/count")
    async def count_users(session: SessionDep) -> int:
        # Reading (here with raw SQL) leaves a transaction open too, but nothing to warn about.
        return int((await session.execute(text("SELECT count(*) FROM users"))).scalar_one())

    return app


def db_fastapi_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "db_fastapi" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("how", ["add", "flush", "core-insert", "text-insert", "commit-then-add"])
async def test_session_dep_forgotten_commit_is_rolled_back_with_a_warning(
    schema: SimpleNamespace, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    expected = ["ada-committed"] if how == "commit-then-add" else []
    with caplog.at_level(logging.WARNING, logger="db_fastapi"), TestClient(session_app(schema)) as client:
        assert client.post("/forgetful/ada", params={"how": how}).status_code == 200
        assert client.get("/users").json() == expected
    warnings = db_fastapi_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "uncommitted" in warnings[0].getMessage()
    assert await stored_names(schema) == expected


async def test_session_dep_committed_work_is_stored_without_warning(
    schema: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="db_fastapi"), TestClient(session_app(schema)) as client:
        assert client.post("/careful/ada").status_code == 200
        assert client.get("/users").json() == ["ada"]
        assert client.post("/careful/alan").status_code == 200
        assert client.get("/users").json() == ["ada", "alan"]
        assert client.get("/count").json() == 2
    assert db_fastapi_warnings(caplog) == []
    assert await stored_names(schema) == ["ada", "alan"]


async def test_unit_of_work_inside_a_transaction_dep_endpoint_is_a_savepoint(schema: SimpleNamespace) -> None:
    """The README's promise: a UnitOfWork opened in the endpoint shares its session, inside a SAVEPOINT."""
    app = FastAPI()
    user = schema.User

    @app.post("/batch")
    async def batch(session: TransactionDep, fail: bool = False) -> dict[str, bool]:
        session.add(user(name="outer"))
        try:
            async with UnitOfWork() as inner:
                shared = inner is session
                inner.add(user(name="inner-undone"))
                await inner.flush()
                raise RuntimeError("only this block is undone")
        except RuntimeError:
            pass
        async with UnitOfWork() as inner:
            inner.add(user(name="inner-kept"))
        if fail:
            raise HTTPException(status_code=409, detail="the whole request is undone")
        return {"shared": shared}

    with TestClient(app) as client:
        assert client.post("/batch", params={"fail": True}).status_code == 409
        assert await stored_names(schema) == []
        response = client.post("/batch")
        assert response.status_code == 200, response.text
        assert response.json() == {"shared": True}
    assert await stored_names(schema) == ["inner-kept", "outer"]


# 4. An exhausted pool is a 503 with Retry-After, not a 500 and not a hang.


@pytest.fixture(params=BACKENDS)
def one_connection_settings(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    """A pool of exactly one connection, and half a second to wait for it."""
    return backend_settings(request, request.param, tmp_path, pool_size=1, max_overflow=0, pool_timeout_seconds=0.5)


@pytest.mark.parametrize("dependency", ["transaction", "session"])
async def test_exhausted_pool_answers_503_with_retry_after(
    one_connection_settings: DatabaseSettings, dependency: str
) -> None:
    configure(one_connection_settings)
    try:
        app = FastAPI()

        @app.get("/transaction")
        async def with_transaction(session: TransactionDep) -> int:
            return int((await session.execute(text("SELECT 1"))).scalar_one())

        @app.get("/session")
        async def with_session(session: SessionDep) -> int:
            return int((await session.execute(text("SELECT 1"))).scalar_one())

        # ASGITransport runs the app on this test's loop, so it shares this loop's engine and pool.
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get(f"/{dependency}")).status_code == 200
            async with get_engine().connect() as held:
                await held.execute(text("SELECT 1"))  # the pool's only connection is now in use
                started = time.monotonic()
                busy = await asyncio.wait_for(client.get(f"/{dependency}"), timeout=10)
                waited = time.monotonic() - started
            assert busy.status_code == 503, busy.text
            assert int(busy.headers["Retry-After"]) > 0
            assert 0.4 <= waited < 5, f"waited {waited:.2f}s for a 0.5s pool timeout"
            # Once the connection is back, the same request is served.
            assert (await client.get(f"/{dependency}")).json() == 1
    finally:
        await dispose_engine()
        configure(None)


# 5. TestClient without `with` (a new loop per request) and db_lifespan around the app's own lifespan.


async def test_testclient_without_with_runs_each_request_on_a_new_loop(schema: SimpleNamespace) -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    app = FastAPI()
    user = schema.User

    @app.post("/users/{name}", status_code=201)
    async def add_user(name: str, session: TransactionDep) -> dict[str, str]:
        loops.append(asyncio.get_running_loop())
        session.add(user(name=name))
        return {"name": name}

    @app.get("/users")
    async def list_users(session: SessionDep) -> list[str]:
        loops.append(asyncio.get_running_loop())
        return list((await session.scalars(select(user.name).order_by(user.name))).all())

    client = TestClient(app)  # deliberately no `with`
    try:
        assert client.post("/users/ada").status_code == 201
        assert client.get("/users").json() == ["ada"]
        assert client.post("/users/alan").status_code == 201
        assert client.get("/users").json() == ["ada", "alan"]
    finally:
        client.close()

    # Each request had an event loop of its own (the list keeps them alive, so the ids are distinct)...
    assert len({id(loop) for loop in loops}) == 4
    assert all(loop.is_closed() for loop in loops)
    # ...and each of those loops' engines was disposed and forgotten when its loop shut down.
    database = db_core.engine._databases["default"]
    assert set(database.engines) <= {id(asyncio.get_running_loop())}
    assert await stored_names(schema) == ["ada", "alan"]


async def test_db_lifespan_runs_the_app_lifespan_and_disposes_the_engines(schema: SimpleNamespace) -> None:
    events: list[str] = []
    pools: list[QueuePool] = []

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with UnitOfWork() as session:
            session.add(schema.User(name="from-startup"))
        events.append("startup")
        yield {"greeting": "hello"}
        # The engine is still there while the app's own lifespan shuts down.
        async with UnitOfWork() as session:
            session.add(schema.User(name="from-shutdown"))
        events.append("shutdown")

    app = FastAPI(lifespan=db_lifespan(app_lifespan))

    @app.get("/hello")
    async def hello(request: Request, session: SessionDep) -> dict[str, Any]:
        pool = get_engine().pool
        assert isinstance(pool, QueuePool)
        pools.append(pool)
        names = list((await session.scalars(select(schema.User.name))).all())
        return {"greeting": request.state.greeting, "names": names}

    with TestClient(app) as client:
        assert events == ["startup"]
        assert client.get("/hello").json() == {"greeting": "hello", "names": ["from-startup"]}
        assert client.get("/hello").json()["greeting"] == "hello"
        database = db_core.engine._databases["default"]
        assert database.engines, "the app's loop has an engine while it runs"
        assert pools[0].checkedin() == 1
    assert events == ["startup", "shutdown"]
    assert not db_core.engine._databases
    assert pools[0].checkedin() == 0, "the app loop's engine was disposed"
    assert await stored_names(schema) == ["from-shutdown", "from-startup"]
