"""The pool serves waiting tasks in turn, keeps its connections under load, and loses none to cancellation.

SQLAlchemy's asyncio pool lets a task that returns a connection (or any
newcomer) take it back before the waiter it woke runs, which sends that
waiter to the back of the line: the tail latency of W4 in the benchmark.
db_core's pool hands a returned connection to the longest waiting task.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text

from db_core import PoolExhaustedError, UnitOfWork, configure, dispose_engine, get_engine
from dbtests.servers import Server


@pytest.fixture
async def small_pool(postgres_server: Server, request: pytest.FixtureRequest) -> None:
    size, overflow = request.param
    configure(postgres_server.settings(pool_size=size, max_overflow=overflow, pool_timeout_seconds=5))
    yield
    await dispose_engine()
    configure(None)


@pytest.mark.parametrize("small_pool", [(1, 0)], indirect=True)
async def test_a_returned_connection_goes_to_the_longest_waiting_task(small_pool: None) -> None:
    served: list[str] = []
    release = asyncio.Event()
    newcomer: list[asyncio.Task[None]] = []

    async def unit_of_work(name: str, hold: asyncio.Event | None = None) -> None:
        async with UnitOfWork() as session:
            await session.execute(text("SELECT 1"))
            served.append(name)
            if hold is not None:
                await hold.wait()

    def arrive(*_args: object) -> None:
        # A task that asks for a connection the moment one is returned, before the waiter the
        # return wakes up gets to run: with SQLAlchemy's pool it takes the connection first.
        newcomer.append(asyncio.get_running_loop().create_task(unit_of_work("newcomer")))

    first = asyncio.create_task(unit_of_work("first", release))
    await asyncio.sleep(0.2)  # first holds the only connection
    assert served == ["first"]
    waiting = []
    for name in ("a", "b", "c"):  # queued in this order behind "first"
        waiting.append(asyncio.create_task(unit_of_work(name)))
        await asyncio.sleep(0.05)
    event.listen(get_engine().sync_engine.pool, "checkin", arrive, once=True)
    release.set()
    await asyncio.gather(first, *waiting)
    await newcomer[0]
    assert served == ["first", "a", "b", "c", "newcomer"]


@pytest.mark.parametrize("small_pool", [(2, 3)], indirect=True)
async def test_connections_are_not_closed_and_reopened_while_tasks_wait(small_pool: None) -> None:
    opened = 0

    def connected(*_args: object) -> None:
        nonlocal opened
        opened += 1

    event.listen(get_engine().sync_engine.pool, "connect", connected)

    async def worker() -> None:
        for _ in range(10):
            async with UnitOfWork() as session:
                await session.execute(text("SELECT pg_sleep(0.002)"))

    await asyncio.gather(*(worker() for _ in range(40)))
    # 2 + 3 opened once; an overflow connection returned while 35 tasks wait goes to one of them.
    assert opened == 5


@pytest.mark.parametrize("small_pool", [(1, 0)], indirect=True)
@pytest.mark.parametrize("when", ["while waiting", "as the connection reaches it"])
async def test_a_cancelled_waiter_takes_no_connection_with_it(small_pool: None, when: str) -> None:
    pool = get_engine().sync_engine.pool
    async with get_engine().connect() as held:
        await held.execute(text("SELECT 1"))
        doomed = asyncio.create_task(get_engine().connect().start())
        await asyncio.sleep(0.05)  # doomed waits for the only connection
        after = asyncio.create_task(get_engine().connect().start())
        await asyncio.sleep(0.05)
        if when == "while waiting":
            doomed.cancel()
            await asyncio.sleep(0)
        else:

            def cancel_doomed(*_args: object) -> None:
                # Scheduled now, so it runs after the hand-over and before doomed wakes up with the connection.
                asyncio.get_running_loop().call_soon(doomed.cancel)

            event.listen(pool, "checkin", cancel_doomed, once=True)
    connection = await asyncio.wait_for(after, timeout=5)
    try:
        assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await connection.close()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert pool.checkedout() == 0


@pytest.mark.parametrize("small_pool", [(1, 0)], indirect=True)
async def test_waiters_still_time_out_with_the_pool_error(postgres_server: Server, small_pool: None) -> None:
    await dispose_engine()
    configure(postgres_server.settings(pool_size=1, max_overflow=0, pool_timeout_seconds=0.3))
    async with get_engine().connect() as held:
        await held.execute(text("SELECT 1"))
        waiting = [asyncio.create_task(get_engine().connect().start()) for _ in range(3)]
        results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, PoolExhaustedError) for r in results), results
    async with UnitOfWork() as session:  # and the pool works afterwards
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
