"""Misuse: one session shared by two tasks at once, and a process forked with open connections."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import warnings

import pytest
from sqlalchemy import text

import db_core.engine as engine_module
from db_core import ConcurrentUseError, DatabaseSettings, UnitOfWork, dispose_engine, get_engine, get_sessionmaker
from dbtests.leaks import FaultReport
from dbtests.queries import OWN_ID

SLOW = {
    "postgres": "SELECT pg_sleep(0.2)",
    "mysql": "SELECT SLEEP(0.2)",
    # SQLite has no sleep(): a recursive count that takes a moment.
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 300000) SELECT count(*) FROM c",
}
ROUNDS = 5
CHILD_SECONDS = 30  # a child that deadlocks is killed after this


async def test_two_tasks_sharing_a_session_get_a_clear_error(db: DatabaseSettings, fault_report: FaultReport) -> None:
    backend = db.type or ""
    refused = 0
    for _ in range(ROUNDS):
        async with UnitOfWork() as session:
            first, second = await asyncio.gather(
                session.execute(text(SLOW[backend])), session.execute(text("SELECT 1")), return_exceptions=True
            )
            assert not isinstance(first, BaseException), first
            assert isinstance(second, ConcurrentUseError), second
            assert "one task at a time" in str(second)
            refused += 1
            # The task that got there first still owns a working session.
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1

    # Each task with a session of its own is the way: no error (on SQLite the second waits for the pool's one).
    async def own_session(value: int) -> int:
        async with get_sessionmaker()() as own:
            return int((await own.execute(text(f"SELECT {value}"))).scalar_one())

    assert await asyncio.gather(own_session(1), own_session(2)) == [1, 2]
    fault_report.add("two tasks on one session", backend, injected=ROUNDS, recovered=refused)


async def test_a_session_is_free_again_once_the_other_task_is_done(db: DatabaseSettings) -> None:
    async with UnitOfWork() as session:
        await asyncio.create_task(session.execute(text("SELECT 1")))
        assert (await session.execute(text("SELECT 2"))).scalar_one() == 2


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_forked_child_gets_connections_of_its_own(
    backend: str, request: pytest.FixtureRequest, fault_report: FaultReport
) -> None:
    from db_core import configure

    server = request.getfixturevalue(f"{backend}_server")
    configure(server.settings(pool_size=1, max_overflow=0))
    try:
        async with get_engine().connect() as conn:
            parent_pid = (await conn.execute(text(OWN_ID[backend]))).scalar_one()
        read, write = os.pipe()
        # Fork while another thread is creating an engine: the child inherits the engine lock
        # held, by a thread that does not exist there.
        locked, release = threading.Event(), threading.Event()

        def creating_an_engine() -> None:
            with engine_module._lock:
                locked.set()
                release.wait()

        other = threading.Thread(target=creating_an_engine)
        other.start()
        locked.wait()
        child = -1
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about fork() in a process with threads; this child only uses its own.
                warnings.simplefilter("ignore", DeprecationWarning)
                child = os.fork()
        finally:
            if child != 0:
                release.set()
                other.join()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            os.close(read)
            code = 1
            try:
                gc.collect()

                async def child_main() -> int:
                    async with get_engine().connect() as conn:
                        pid = (await conn.execute(text(OWN_ID[backend]))).scalar_one()
                    await dispose_engine()  # closes the child's connections, not the parent's
                    return int(pid)

                os.write(write, str(asyncio.run(child_main())).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            reading = asyncio.ensure_future(asyncio.to_thread(pipe.read))
            done, _ = await asyncio.wait([reading], timeout=CHILD_SECONDS)
            if not done:
                os.kill(child, signal.SIGKILL)  # the read ends with the child
            reported = await reading
        _, status = await asyncio.to_thread(os.waitpid, child, 0)
        assert done, f"the child hung for {CHILD_SECONDS}s (deadlocked on a lock inherited from the parent?)"
        assert os.waitstatus_to_exitcode(status) == 0
        child_pid = int(reported)
        assert child_pid != parent_pid  # no shared socket: another server session
        # The parent's pooled connection was neither used nor closed by the child.
        async with get_engine().connect() as conn:
            assert (await conn.execute(text(OWN_ID[backend]))).scalar_one() == parent_pid
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        fault_report.add("fork with pooled connections", backend, injected=1, recovered=1)
    finally:
        await dispose_engine()
        configure(None)
