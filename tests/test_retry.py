"""``run_transaction``: transient failures are run again, everything else exactly once (real servers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from db_core import DatabaseSettings, UnitOfWork, UnitOfWorkError, get_engine, run_transaction

SERVERS = [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]


@pytest.fixture(params=SERVERS)
def settings(request: pytest.FixtureRequest) -> DatabaseSettings:
    """Settings for each server in turn (overrides the root conftest's three backends)."""
    server = request.getfixturevalue(f"{request.param}_server")
    return server.settings()  # type: ignore[no-any-return]


@pytest.fixture
async def accounts(db: DatabaseSettings) -> AsyncIterator[str]:
    """A table ``account`` with rows 1 and 2, both with balance 100; the backend's name."""
    async with get_engine().begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS account"))
        await connection.execute(text("CREATE TABLE account (id INT PRIMARY KEY, balance INT, on_call BOOLEAN)"))
        await connection.execute(text("INSERT INTO account VALUES (1, 100, true), (2, 100, true)"))
    yield db.type or ""
    async with get_engine().begin() as connection:
        await connection.execute(text("DROP TABLE account"))


def counted(work: Callable[[AsyncSession, int], Awaitable[Any]]) -> tuple[list[int], Callable[[AsyncSession], Any]]:
    """``work`` with the number of each attempt, and the list of attempts made."""
    attempts: list[int] = []

    async def run(session: AsyncSession) -> Any:
        attempts.append(len(attempts) + 1)
        return await work(session, len(attempts))

    return attempts, run


async def test_a_deadlock_is_run_again_until_both_complete(accounts: str, caplog: pytest.LogCaptureFixture) -> None:
    both_locked = asyncio.Barrier(2)

    def transfer(first: int, second: int) -> Callable[[AsyncSession, int], Awaitable[None]]:
        async def work(session: AsyncSession, attempt: int) -> None:
            await session.execute(text("UPDATE account SET balance = balance - 10 WHERE id = :id"), {"id": first})
            if attempt == 1:
                await both_locked.wait()  # each holds one row and asks for the other's: a deadlock
            await session.execute(text("UPDATE account SET balance = balance + 10 WHERE id = :id"), {"id": second})

        return work

    caplog.set_level(logging.INFO, logger="db_core")
    one, work_one = counted(transfer(1, 2))
    two, work_two = counted(transfer(2, 1))
    await asyncio.gather(run_transaction(work_one), run_transaction(work_two))
    assert sorted([len(one), len(two)]) == [1, 2], "exactly one of the two was chosen as the deadlock victim"
    async with UnitOfWork() as session:
        assert list((await session.execute(text("SELECT balance FROM account ORDER BY id"))).scalars()) == [100, 100]
    reason = "deadlock detected" if accounts == "postgres" else "1213"
    assert any("attempt 1 of 5 failed" in r.getMessage() and reason in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("settings", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_serializable_write_skew_is_run_again(accounts: str) -> None:
    """Two doctors both go off call if each only sees the other on call; serializable refuses one (40001)."""
    both_read = asyncio.Barrier(2)

    def go_off_call(me: int) -> Callable[[AsyncSession, int], Awaitable[bool]]:
        async def work(session: AsyncSession, attempt: int) -> bool:
            await session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
            on_call = await session.scalar(text("SELECT count(*) FROM account WHERE on_call"))
            if attempt == 1:
                await both_read.wait()
            if on_call < 2:
                return False
            await session.execute(text("UPDATE account SET on_call = false WHERE id = :id"), {"id": me})
            return True

        return work

    one, work_one = counted(go_off_call(1))
    two, work_two = counted(go_off_call(2))
    results = await asyncio.gather(run_transaction(work_one), run_transaction(work_two))
    assert sorted(results) == [False, True]
    assert sorted([len(one), len(two)]) == [1, 2]
    async with UnitOfWork() as session:
        assert await session.scalar(text("SELECT count(*) FROM account WHERE on_call")) == 1


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("INSERT INTO account VALUES (1, 0, false)", sa_exc.IntegrityError),
        ("SELEC 1", sa_exc.ProgrammingError),
    ],
    ids=["unique-violation", "syntax-error"],
)
async def test_other_errors_run_exactly_once(accounts: str, statement: str, error: type[Exception]) -> None:
    async def work(session: AsyncSession, _attempt: int) -> None:
        await session.execute(text("UPDATE account SET balance = 0 WHERE id = 2"))
        await session.execute(text(statement))

    attempts, run = counted(work)
    with pytest.raises(error):
        await run_transaction(run)
    assert attempts == [1]
    async with UnitOfWork() as session:
        assert await session.scalar(text("SELECT balance FROM account WHERE id = 2")) == 100, "rolled back"


async def test_attempts_are_bounded(accounts: str) -> None:
    """A failure that comes back at every attempt is given up after ``attempts`` runs, saying so.

    PostgreSQL: a REPEATABLE READ transaction updates a row another one changed
    since its snapshot (40001). MariaDB: the row stays locked by another
    connection beyond ``innodb_lock_wait_timeout`` (1205).
    """

    async def work(session: AsyncSession, _attempt: int) -> None:
        if accounts == "postgres":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            await session.execute(text("SELECT balance FROM account WHERE id = 1"))
            async with get_engine().begin() as other:
                await other.execute(text("UPDATE account SET balance = balance + 1 WHERE id = 1"))
        else:
            await session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
        await session.execute(text("UPDATE account SET balance = 0 WHERE id = 1"))

    attempts, run = counted(work)
    async with get_engine().connect() as holder:
        if accounts == "mysql":
            await holder.execute(text("UPDATE account SET balance = balance WHERE id = 1"))  # holds the row lock
        with pytest.raises(sa_exc.DBAPIError) as gave_up:
            await run_transaction(run, attempts=3, backoff_seconds=0.001)
        await holder.rollback()
    assert attempts == [1, 2, 3]
    assert "db_core: run_transaction gave up after 3 attempts" in gave_up.value.__notes__


async def test_refused_inside_an_open_unit_of_work(accounts: str) -> None:
    async def work(session: AsyncSession) -> None:
        raise AssertionError("never run")

    async with UnitOfWork():
        with pytest.raises(UnitOfWorkError, match="inside an open UnitOfWork"):
            await run_transaction(work)
    with pytest.raises(ValueError, match="attempts=0"):
        await run_transaction(work, attempts=0)
