"""Code that commits through UnitOfWork is rolled back after each test all the same."""

from __future__ import annotations

import pytest
import service
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("attempt", range(10))
async def test_the_same_address_registers_in_every_test(db_session: AsyncSession, attempt: int) -> None:
    # Each test commits ada@example.com; a unique violation here would mean an earlier test's row survived.
    await service.register("ada@example.com", f"note {attempt}")
    assert await db_session.scalar(select(func.count()).select_from(service.User)) == 1


async def test_nested_units_commit_with_the_outer_one(db_session: AsyncSession) -> None:
    await service.register("alan@example.com", "first", "second", "third")
    notes = await db_session.scalars(select(service.Note.text).order_by(service.Note.id))
    assert list(notes) == ["first", "second", "third"]


async def test_a_caught_integrity_error_leaves_the_test_usable(db_session: AsyncSession) -> None:
    assert await service.register_unless_taken("grace@example.com")
    assert not await service.register_unless_taken("grace@example.com")
    assert await service.register_unless_taken("edsger@example.com")
    emails = await db_session.scalars(select(service.User.email).order_by(service.User.email))
    assert list(emails) == ["edsger@example.com", "grace@example.com"]


async def test_the_session_sees_what_the_code_committed_and_adds_its_own(db_session: AsyncSession) -> None:
    user_id = await service.register("barbara@example.com")
    db_session.add(service.Note(user_id=user_id, text="from the test"))
    await db_session.flush()
    assert await db_session.scalar(select(func.count()).select_from(service.Note)) == 1


async def test_runs_on_the_test_database(db_session: AsyncSession) -> None:
    database = db_session.get_bind().engine.url.database or ""
    assert "test_" in database, database
