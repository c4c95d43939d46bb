"""One engine per event loop: the singleton survives new loops (done means 5)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from db_core import DatabaseSettings, configure, dispose_engine, get_engine, get_sessionmaker
from db_core import engine as engine_module


@pytest.fixture
def configured(settings: DatabaseSettings) -> Iterator[DatabaseSettings]:
    """Configured for synchronous tests that run their own event loops."""
    configure(settings)
    yield settings
    asyncio.run(dispose_engine())
    configure(None)


async def select_one() -> int:
    async with get_sessionmaker()() as session:
        return int((await session.execute(text("SELECT 1"))).scalar_one())


def test_three_consecutive_asyncio_runs(configured: DatabaseSettings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    engines = []
    for _ in range(3):

        async def run() -> int:
            engines.append(get_engine())
            return await select_one()

        assert asyncio.run(run()) == 1
    assert len({id(e) for e in engines}) == 3  # a new engine on each loop
    # Each loop's engine was disposed while its loop shut down, cleanly.
    assert not any(database.engines for database in engine_module._databases.values())
    assert not [r for r in caplog.records if "Event loop is closed" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_threads_and_coroutines_get_one_engine_per_loop(configured: DatabaseSettings) -> None:
    threads, coroutines = 8, 500
    barrier = threading.Barrier(threads)
    seen: dict[int, set[int]] = {}
    results: dict[int, list[int]] = {}

    async def in_loop(index: int) -> None:
        barrier.wait()  # every thread's loop asks at the same moment

        async def ask() -> int:
            await asyncio.sleep(0)
            return id(get_engine())

        ids = await asyncio.gather(*(ask() for _ in range(coroutines)))
        seen[index] = set(ids)
        results[index] = await asyncio.gather(*(select_one() for _ in range(5)))

    workers = [threading.Thread(target=asyncio.run, args=(in_loop(i),)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(seen) == threads
    assert all(len(ids) == 1 for ids in seen.values())  # one engine per loop...
    assert len(set().union(*seen.values())) == threads  # ...and a different one for each loop
    assert all(values == [1] * 5 for values in results.values())


def test_dispose_engine_then_reuse(configured: DatabaseSettings) -> None:
    async def run() -> None:
        first = get_engine()
        assert await select_one() == 1
        await dispose_engine()
        assert get_engine() is not first
        assert await select_one() == 1

    asyncio.run(run())


def test_configure_refuses_while_engines_are_open(configured: DatabaseSettings) -> None:
    from db_core import ConfigurationError

    async def run() -> None:
        get_engine()
        with pytest.raises(ConfigurationError, match="dispose_engine"):
            configure(configured)

    asyncio.run(run())
