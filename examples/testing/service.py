"""A small service to test: users with unique e-mail addresses, and their notes."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db_core import UnitOfWork
from db_fastapi import ReadOnlyTransactionDep, TransactionDep, db_lifespan


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(String(500))


async def register(email: str, *notes: str) -> int:
    """Create a user and its notes in a unit of work of its own (committed when it returns)."""
    async with UnitOfWork() as session:
        user = User(email=email)
        session.add(user)
        await session.flush()
        for text in notes:
            async with UnitOfWork():  # nested: a savepoint of the same session
                session.add(Note(user_id=user.id, text=text))
        return user.id


async def register_unless_taken(email: str) -> bool:
    """Whether ``email`` was free and is now registered; a taken address is not an error."""
    try:
        await register(email)
    except IntegrityError:
        return False
    return True


app = FastAPI(lifespan=db_lifespan())


@app.post("/users", status_code=201)
async def create_user(email: str, session: TransactionDep) -> dict[str, int]:
    user = User(email=email)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise HTTPException(409, f"{email} is taken") from None
    return {"id": user.id}


@app.get("/users/count")
async def count_users(session: ReadOnlyTransactionDep) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)
