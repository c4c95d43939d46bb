"""``join_transaction``: code that commits, inside a test's transaction that is rolled back, on every backend.

The pattern a test fixture builds on: one connection, one outer transaction;
the code under test commits through ``UnitOfWork`` or the FastAPI
dependencies, catches an ``IntegrityError`` and goes on, nests units; at the
end the outer transaction is rolled back and nothing it did remains.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx2
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db_core import DatabaseSettings, UnitOfWork, UnitOfWorkError, get_engine, join_transaction
from db_fastapi import ReadOnlyTransactionDep, SessionDep, TransactionDep


async def count_users(schema: SimpleNamespace) -> int:
    """How many users another connection sees: what was really committed."""
    async with get_engine().connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(schema.User)) or 0)


@pytest.fixture
async def joined(schema: SimpleNamespace) -> AsyncIterator[AsyncSession]:
    """A session in an outer transaction that every unit of work of the test joins; rolled back after."""
    async with get_engine().connect() as connection:
        outer = await connection.begin()
        with join_transaction(connection) as sessionmaker:
            async with sessionmaker() as session:
                yield session
        await outer.rollback()
    assert await count_users(schema) == 0, "the test's rows outlived its rollback"
    async with get_engine().connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "made_in_a_test" not in tables


async def test_commits_through_units_of_work_are_rolled_back(schema: SimpleNamespace, joined: AsyncSession) -> None:
    async with UnitOfWork() as session:
        session.add(schema.User(name="committed"))
    async with UnitOfWork() as session:  # a later unit sees the earlier one's commit
        async with UnitOfWork() as nested:  # a savepoint in its session
            nested.add(schema.User(name="nested"))
        with pytest.raises(ZeroDivisionError):
            async with UnitOfWork() as failed:
                failed.add(schema.User(name="undone"))
                await failed.flush()
                1 / 0  # noqa: B018
        names = (await session.scalars(select(schema.User.name).order_by(schema.User.name))).all()
    assert list(names) == ["committed", "nested"]
    assert await joined.scalar(select(func.count()).select_from(schema.User)) == 2


async def test_a_caught_integrity_error_leaves_the_test_usable(schema: SimpleNamespace, joined: AsyncSession) -> None:
    async with UnitOfWork() as session:
        session.add(schema.User(name="taken"))
    with pytest.raises(sa_exc.IntegrityError):
        async with UnitOfWork() as session:
            session.add(schema.User(name="taken"))
    async with UnitOfWork() as session:
        session.add(schema.User(name="after"))
    async with UnitOfWork(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(schema.User)) == 2


async def test_fastapi_dependencies_join_the_test_transaction(schema: SimpleNamespace, joined: AsyncSession) -> None:
    app = FastAPI()

    @app.post("/users/{name}", status_code=201)
    async def create(name: str, session: TransactionDep) -> None:
        session.add(schema.User(name=name))

    @app.post("/by-hand/{name}", status_code=201)
    async def by_hand(name: str, session: SessionDep) -> None:
        session.add(schema.User(name=name))
        await session.commit()

    @app.get("/count")
    async def count(session: ReadOnlyTransactionDep) -> int:
        return int(await session.scalar(select(func.count()).select_from(schema.User)) or 0)

    # The app runs on the test's own event loop (no TestClient thread), so it sees the joined sessions.
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/users/ada")).status_code == 201
        assert (await client.post("/by-hand/alan")).status_code == 201
        assert (await client.get("/count")).json() == 2
    assert await joined.scalar(select(func.count()).select_from(schema.User)) == 2


async def test_ddl_that_would_commit_the_test_s_transaction_is_refused(
    schema: SimpleNamespace, joined: AsyncSession, db: DatabaseSettings
) -> None:
    async with UnitOfWork() as session:
        session.add(schema.User(name="before-ddl"))
    create = text("CREATE TABLE made_in_a_test (id INT)")
    if db.type == "mysql":
        # MariaDB would commit "before-ddl" for good before creating the table: refused, not run.
        with pytest.raises(UnitOfWorkError, match="commits implicitly before DDL") as refused:
            async with UnitOfWork() as session:
                await session.execute(create)
        assert "CREATE TABLE made_in_a_test" in str(refused.value)
        async with UnitOfWork() as session:  # a temporary table commits nothing
            await session.execute(text("CREATE TEMPORARY TABLE scratch (id INT)"))
            await session.execute(text("DROP TEMPORARY TABLE scratch"))
    else:
        async with UnitOfWork() as session:  # transactional DDL: rolled back with the rest
            await session.execute(create)
    assert await joined.scalar(select(func.count()).select_from(schema.User)) == 1
    # The fixture's teardown checks that "before-ddl" did not survive the rollback.


async def test_a_session_on_another_event_loop_is_refused(schema: SimpleNamespace, joined: AsyncSession) -> None:
    """Code on another loop (a TestClient thread, a fixture on another loop scope) would commit for good."""

    async def elsewhere() -> None:
        async with UnitOfWork() as session:
            session.add(schema.User(name="escaped"))

    with pytest.raises(UnitOfWorkError, match="open on another event loop") as refused:
        await asyncio.to_thread(asyncio.run, elsewhere())
    assert "asyncio_default_test_loop_scope" in str(refused.value)
    # The fixture's teardown checks that nothing was committed.
