"""What the tests before these left behind: nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import service
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db_core import UnitOfWork, UnitOfWorkError, get_connector_instance

pytestmark = pytest.mark.asyncio


async def test_no_row_of_an_earlier_test_remains(db_session: AsyncSession) -> None:
    assert await db_session.scalar(select(func.count()).select_from(service.User)) == 0
    assert await db_session.scalar(select(func.count()).select_from(service.Note)) == 0


async def test_ddl_in_a_test(db_session: AsyncSession) -> None:
    await service.register("before-ddl@example.com")
    create = text("CREATE TABLE made_in_a_test (id INT)")
    if get_connector_instance().name == "mysql":
        # MariaDB would commit the row above for good before creating the table: refused instead.
        with pytest.raises(UnitOfWorkError, match="commits implicitly before DDL"):
            async with UnitOfWork() as session:
                await session.execute(create)
    else:
        async with UnitOfWork() as session:  # transactional DDL, rolled back with the rest
            await session.execute(create)
    assert await db_session.scalar(select(func.count()).select_from(service.User)) == 1


async def test_record_which_database_the_run_used(db_session: AsyncSession) -> None:
    record = os.environ.get("EXAMPLE_RECORD_DATABASE")
    if record:  # the repository's tests read it back
        await asyncio.to_thread(Path(record).write_text, f"{db_session.get_bind().engine.url.database}\n")
    assert await db_session.scalar(select(func.count()).select_from(service.User)) == 0
