"""Two pytest-asyncio tests, each on its own function-scoped loop, with no dispose fixture (done means 5).

The settings are configured once for the module and never disposed between
the tests: the second test's loop must get its own engine without the user
doing anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from db_core import configure, dispose_engine, get_engine

engines: list[object] = []  # the engines themselves: an id() could be reused


@pytest.fixture(scope="module", params=["sqlite", "postgres", "mysql"])
def configured_once(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    backend = request.param
    if backend == "sqlite":
        from db_core import DatabaseSettings

        settings = DatabaseSettings(
            type="sqlite", name=str(Path(tmp_path_factory.mktemp("s")) / "a.db"), _env_file=None
        )
    else:
        settings = request.getfixturevalue(f"{backend}_server").settings()
    engines.clear()
    configure(settings)
    yield
    asyncio.run(dispose_engine())
    configure(None)


async def query() -> int:
    async with get_engine().connect() as conn:
        return int((await conn.execute(text("SELECT 1"))).scalar_one())


async def test_first_loop(configured_once: None) -> None:
    engines.append(get_engine())
    assert await query() == 1


async def test_second_loop(configured_once: None) -> None:
    engines.append(get_engine())
    assert await query() == 1
    assert len({id(e) for e in engines}) == 2
