"""The seed's two usage examples, on every backend (done means 1)."""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from db_core import UnitOfWork
from db_fastapi import SessionDep, TransactionDep, db_lifespan


async def create_user_with_profile(schema: SimpleNamespace, name: str, bio: str) -> None:
    async with UnitOfWork() as session:
        user = schema.User(name=name)
        session.add(user)
        await session.flush()
        session.add(schema.Profile(user_id=user.id, bio=bio))


async def test_unit_of_work_user_and_profile(schema: SimpleNamespace) -> None:
    await create_user_with_profile(schema, "ada", "mathematician")
    async with UnitOfWork() as session:
        rows = (await session.execute(select(schema.User.name, schema.Profile.bio).join(schema.Profile))).all()
    assert [tuple(r) for r in rows] == [("ada", "mathematician")]


async def test_unit_of_work_failure_stores_neither(schema: SimpleNamespace) -> None:
    try:
        async with UnitOfWork() as session:
            user = schema.User(name="grace")
            session.add(user)
            await session.flush()
            session.add(schema.Profile(user_id=user.id, bio="admiral"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    async with UnitOfWork() as session:
        assert (await session.execute(select(schema.User))).scalars().all() == []
        assert (await session.execute(select(schema.Profile))).scalars().all() == []


async def test_fastapi_list_users(schema: SimpleNamespace) -> None:
    await create_user_with_profile(schema, "ada", "x")
    await create_user_with_profile(schema, "alan", "y")
    app = FastAPI(lifespan=db_lifespan())

    @app.get("/users")
    async def get_users(session: SessionDep) -> list[str]:
        result = await session.execute(select(schema.User).order_by(schema.User.name))
        return [u.name for u in result.scalars().all()]

    @app.post("/users/{name}", status_code=201)
    async def add_user(name: str, session: TransactionDep) -> dict[str, str]:
        session.add(schema.User(name=name))
        return {"name": name}

    # TestClient runs the app on an event loop of its own: the engine follows it there.
    with TestClient(app) as client:
        assert client.get("/users").json() == ["ada", "alan"]
        assert client.post("/users/edsger").status_code == 201
        assert client.get("/users").json() == ["ada", "alan", "edsger"]
