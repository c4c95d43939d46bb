"""UnitOfWork on every backend: commit, rollback, cancellation, dead connections, nesting (done means 6)."""

from __future__ import annotations

import asyncio
import gc
import random
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from db_core import DatabaseSettings, UnitOfWork, UnitOfWorkError, get_engine
from dbtests.queries import slow_query
from dbtests.servers import Server


async def names(schema: SimpleNamespace) -> list[str]:
    async with UnitOfWork() as session:
        return list((await session.execute(select(schema.User.name).order_by(schema.User.name))).scalars())


async def test_commit_and_rollback(schema: SimpleNamespace) -> None:
    async with UnitOfWork() as session:
        session.add(schema.User(name="kept"))
    with pytest.raises(ZeroDivisionError):
        async with UnitOfWork() as session:
            session.add(schema.User(name="dropped"))
            await session.flush()
            1 / 0  # noqa: B018
    assert await names(schema) == ["kept"]
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_begin_and_end_as_in_the_seed(schema: SimpleNamespace) -> None:
    uow = await UnitOfWork().begin()
    assert uow.is_open
    uow.session.add(schema.User(name="explicit"))
    await uow.end()
    assert not uow.is_open
    with pytest.raises(UnitOfWorkError, match="not open"):
        uow.session  # noqa: B018 - the property raises outside the unit of work
    failed = await UnitOfWork().begin()
    failed.session.add(schema.User(name="failed"))
    await failed.end(RuntimeError("caller's failure"))
    assert await names(schema) == ["explicit"]


async def test_reentry_raises_and_reuse_after_end_works(schema: SimpleNamespace) -> None:
    uow = UnitOfWork()
    async with uow as session:
        with pytest.raises(UnitOfWorkError, match="already open"):
            async with uow:
                pass
        session.add(schema.User(name="first"))
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]
    async with uow as session:  # sequential reuse is fine
        session.add(schema.User(name="second"))
    assert await names(schema) == ["first", "second"]


async def test_nested_unit_of_work_is_a_savepoint(schema: SimpleNamespace) -> None:
    async with UnitOfWork() as outer:
        outer.add(schema.User(name="outer"))
        with pytest.raises(ValueError, match="inner"):
            async with UnitOfWork() as inner:
                assert inner is outer
                inner.add(schema.User(name="inner"))
                await inner.flush()
                raise ValueError("inner")
        async with UnitOfWork() as inner_ok:
            inner_ok.add(schema.User(name="inner-ok"))
    assert await names(schema) == ["inner-ok", "outer"]


async def test_outer_failure_undoes_committed_savepoints(schema: SimpleNamespace) -> None:
    with pytest.raises(KeyError):
        async with UnitOfWork():
            async with UnitOfWork() as inner:
                inner.add(schema.User(name="inner"))
            raise KeyError("outer")
    assert await names(schema) == []


async def test_child_task_gets_its_own_unit_of_work(schema: SimpleNamespace) -> None:
    async def child() -> None:
        async with UnitOfWork() as session:
            session.add(schema.User(name="child"))

    async with UnitOfWork() as session:
        session.add(schema.User(name="parent"))
        await session.flush()
        # A task started inside inherits the context but must not share the session.
        # (On SQLite the parent holds the only write lock, so the child runs after.)
        if get_engine().dialect.name != "sqlite":
            await asyncio.wait_for(asyncio.create_task(child()), 10)
    if get_engine().dialect.name == "sqlite":
        await child()
    assert sorted(await names(schema)) == ["child", "parent"]


async def test_random_cancellations_leak_nothing_and_lose_nothing(
    schema: SimpleNamespace, settings: DatabaseSettings
) -> None:
    backend = settings.type or ""
    committed: list[str] = []
    committing: set[str] = set()
    rng = random.Random(20261125)

    async def unit(index: int) -> None:
        async with asyncio.timeout(rng.uniform(0, 0.05)):
            async with UnitOfWork() as session:
                session.add(schema.User(name=f"u{index}"))
                await session.flush()
                await session.execute(text(slow_query(backend)))
                committing.add(f"u{index}")
        committed.append(f"u{index}")

    results = await asyncio.gather(*(unit(i) for i in range(200)), return_exceptions=True)
    timeouts = sum(isinstance(r, TimeoutError) for r in results)
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, TimeoutError)]
    assert not others, others[:3]
    assert timeouts > 0  # the test really cancelled something
    del results
    gc.collect()
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]
    stored = set(await names(schema))
    # Nothing that finished is lost...
    assert set(committed) <= stored
    # ...and a cancelled unit is stored only if the cancellation came during its COMMIT,
    # which then completed before the cancellation propagated.
    assert stored <= committing
    async with UnitOfWork() as session:
        assert (await session.execute(select(func.count()).select_from(schema.User))).scalar_one() == len(stored)


async def _kill(server: Server, connection_id: int) -> None:
    if server.backend == "postgres":
        # Scoped to the one backend this test opened.
        await server.admin(f"SELECT pg_terminate_backend({connection_id})")
    else:
        await server.admin(f"KILL {connection_id}")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_user_exception_survives_a_dead_connection(
    backend: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    from db_core import configure, dispose_engine

    server: Server = request.getfixturevalue(f"{backend}_server")
    configure(server.settings())
    try:
        pid_sql = "SELECT pg_backend_pid()" if backend == "postgres" else "SELECT CONNECTION_ID()"
        with pytest.raises(LookupError, match="the caller's own error") as info:
            async with UnitOfWork() as session:
                connection_id = (await session.execute(text(pid_sql))).scalar_one()
                await _kill(server, connection_id)
                await asyncio.sleep(0.2)
                raise LookupError("the caller's own error")
        assert any("rolling back" in note for note in getattr(info.value, "__notes__", []))
        gc.collect()
        assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]
        async with UnitOfWork() as session:  # the pool recovers
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await dispose_engine()
        configure(None)
