"""The db demo: a small FastAPI service with users and profiles.

Runs on the embedded SQLite database by default (``app.db`` in the working
directory); set ``DB_TYPE``/``DB_HOST``/... or ``DB_URL`` to run the same code on
PostgreSQL or MariaDB. Start it with ``./hatchw run demo:serve``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from db_core import UnitOfWork, get_connector_instance, get_engine, ping
from db_fastapi import SessionDep, TransactionDep, db_lifespan


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "demo_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    profile: Mapped[Profile | None] = relationship(back_populates="user")


class Profile(Base):
    __tablename__ = "demo_profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("demo_users.id", ondelete="CASCADE"), unique=True)
    bio: Mapped[str] = mapped_column(String(500), default="")
    user: Mapped[User] = relationship(back_populates="profile")


class UserIn(BaseModel):
    name: str
    bio: str = ""


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    bio: str | None = None


def to_out(user: User) -> UserOut:
    return UserOut(id=user.id, name=user.name, bio=user.profile.bio if user.profile else None)


async def create_user_with_profile(name: str, bio: str) -> User:
    """The seed's unit-of-work example: a user and its profile, both or neither."""
    async with UnitOfWork() as session:
        user = User(name=name)
        session.add(user)
        await session.flush()
        session.add(Profile(user_id=user.id, bio=bio))
        await session.flush()
        await session.refresh(user, ["profile"])
        return user


@asynccontextmanager
async def create_tables(app: FastAPI) -> AsyncIterator[None]:
    # A real service would run migrations; the demo creates its tables on start-up.
    async with get_engine().begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield


app = FastAPI(title="db demo", lifespan=db_lifespan(create_tables))


@app.get("/users")
async def list_users(session: SessionDep) -> list[UserOut]:
    """Every user, read through a plain request-scoped session."""
    result = await session.execute(select(User).options(selectinload(User.profile)).order_by(User.id))
    return [to_out(user) for user in result.scalars()]


@app.post("/users", status_code=201)
async def create_user(body: UserIn, session: TransactionDep) -> UserOut:
    """Create a user in the request's transaction: committed before the 201 is sent."""
    user = User(name=body.name, profile=Profile(bio=body.bio))
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f"a user named {body.name!r} exists") from None
    return to_out(user)


@app.post("/signup", status_code=201)
async def signup(body: UserIn) -> UserOut:
    """The same through a service function that owns its UnitOfWork."""
    try:
        return to_out(await create_user_with_profile(body.name, body.bio))
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f"a user named {body.name!r} exists") from None


@app.get("/users/{user_id}")
async def get_user(user_id: int, session: SessionDep) -> UserOut:
    """One user, or 404."""
    user = await session.get(User, user_id, options=[selectinload(User.profile)])
    if user is None:
        raise HTTPException(status_code=404, detail="no such user")
    return to_out(user)


@app.get("/health")
async def health() -> dict[str, object]:
    """Which database this is, and how far away (no URL, no password)."""
    result = await ping()
    return {
        "backend": result.backend,
        "server_version": result.server_version,
        "round_trip_ms": round(result.round_trip_seconds * 1000, 3),
        "connector": get_connector_instance().name,
    }
