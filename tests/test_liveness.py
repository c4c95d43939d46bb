"""Pre-ping without a ping per checkout, and the first statement retried on a new connection.

``DB_POOL_PRE_PING`` replaces a pooled connection the driver already knows to
be closed without asking the server, pings only connections idle for
``DB_POOL_PRE_PING_IDLE_SECONDS``, and a connection that dies unnoticed in
between fails its first statement, which the session runs again on a new
connection. Each guarantee is shown here on real servers, with no ping sent
for a connection in steady use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx2
import pytest
from fastapi import FastAPI
from sqlalchemy import Integer, String, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db_core import UnitOfWork, configure, dispose_engine, get_engine
from db_core.testing import Relay, TurnCounter
from db_fastapi import TransactionDep
from dbtests.queries import OWN_ID, own_id
from dbtests.servers import Server, kill

RETRIED = "retrying it on a new connection"
REPLACED = "the server closed this pooled connection while it was idle"


@pytest.fixture(params=["postgres", "mysql"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


class DropOnNextSend(Relay):
    """Closes a relayed connection when the client next sends, before the server sees a byte of it.

    The connection is alive when the pool checks it and dead when its first
    statement goes out: the moment no check at checkout can see.
    """

    armed = False

    def from_client(self, data: bytes) -> None:
        if self.armed:
            self.armed = False
            raise ConnectionAbortedError("dropped by the test")  # the relay closes both sides


async def test_connections_killed_while_idle_are_replaced_without_an_error(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed a moment before the next checkout, or well before: no error reaches the caller, no ping is sent."""
    caplog.set_level(logging.INFO)
    # No ping at all within the hour: what recovers is the closed-connection check and the retry.
    configure(server.settings(pool_size=1, max_overflow=0, pool_pre_ping_idle_seconds=3600))
    try:
        seen = [await own_id(server.backend)]
        for _ in range(5):  # killed just before the checkout: either recovery may catch it
            await kill(server, seen[-1])
            seen.append(await own_id(server.backend))
        retries_before = caplog.text.count(RETRIED)
        for _ in range(3):  # killed well before: the pool sees the closed connection itself
            await kill(server, seen[-1])
            await asyncio.sleep(0.5)
            seen.append(await own_id(server.backend))
    finally:
        await dispose_engine()
        configure(None)
    assert len(set(seen)) == len(seen), f"a killed connection was used again: {seen}"
    assert caplog.text.count(RETRIED) == retries_before, "a closed connection was handed out and needed a retry"
    assert caplog.text.count(REPLACED) >= 3


async def test_pre_ping_holds_after_the_engine_is_disposed(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """``engine.dispose()`` gives the engine a new pool: it checks connections as the first one did."""
    caplog.set_level(logging.INFO)
    configure(server.settings(pool_size=1, max_overflow=0, pool_pre_ping_idle_seconds=3600))
    try:
        await get_engine().dispose()
        first = await own_id(server.backend)
        await kill(server, first)
        await asyncio.sleep(0.5)
        second = await own_id(server.backend)
    finally:
        await dispose_engine()
        configure(None)
    assert second != first
    assert RETRIED not in caplog.text, "the new pool handed out a closed connection"
    assert REPLACED in caplog.text


@pytest.fixture
async def dropping(server: Server) -> AsyncIterator[DropOnNextSend]:
    """``server`` behind a :class:`DropOnNextSend` relay, configured with a pool of one connection."""
    relay = DropOnNextSend((server.host, server.port))
    await relay.start()
    configure(server.settings(port=relay.port, pool_size=1, max_overflow=0))
    try:
        yield relay
    finally:
        await dispose_engine()
        configure(None)
        await relay.close()


async def test_a_connection_lost_before_its_first_statement_is_retried_on_a_new_one(
    server: Server, dropping: DropOnNextSend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = await own_id(server.backend)
    dropping.armed = True
    second = await own_id(server.backend)  # the first statement goes out on a dead connection
    assert dropping.accepted == 2, "the statement was not run on a new connection"
    assert second != first
    assert caplog.text.count(RETRIED) == 1


async def test_an_endpoint_first_statement_is_retried_after_the_dependency_checked_out(
    server: Server, dropping: DropOnNextSend, caplog: pytest.LogCaptureFixture
) -> None:
    """``TransactionDep`` checks out before the endpoint runs; the endpoint's first statement is still retried."""
    caplog.set_level(logging.INFO)
    app = FastAPI()

    @app.get("/id")
    async def connection_id(session: TransactionDep) -> int:
        dropping.armed = True  # the connection is checked out; it dies before the first statement
        return int((await session.execute(text(OWN_ID[server.backend]))).scalar_one())

    first = await own_id(server.backend)
    # ASGITransport runs the app on this loop: the same engine and pool.
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver") as client:
        response = await client.get("/id")
    assert response.status_code == 200, response.text
    assert response.json() != first
    assert dropping.accepted == 2
    assert caplog.text.count(RETRIED) == 1


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "liveness_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(50))


async def test_nothing_pending_is_retried_away(dropping: DropOnNextSend) -> None:
    """A lost connection is not retried once the transaction had more than its first statement to lose."""
    async with get_engine().begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        # A pending object: the statement would flush it first; retrying after a rollback would lose it.
        with pytest.raises(DBAPIError) as pending:
            async with UnitOfWork() as session:
                session.add(Note(id=1, text="pending"))
                dropping.armed = True
                await session.execute(text("SELECT 1"))
        # A second statement: the first one's work is gone with the connection.
        with pytest.raises(DBAPIError) as second:
            async with UnitOfWork() as session:
                await session.execute(text("SELECT 1"))
                dropping.armed = True
                await session.execute(text("SELECT 1"))
        async with UnitOfWork() as session:
            assert (await session.execute(text("SELECT count(*) FROM liveness_notes"))).scalar_one() == 0
    finally:
        async with get_engine().begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
    assert pending.value.connection_invalidated
    assert second.value.connection_invalidated
    assert dropping.accepted == 3


async def test_pings_only_connections_idle_longer_than_the_threshold(server: Server) -> None:
    """Round trips counted at the wire: none for pre-ping in steady use, a ping after the idle threshold."""
    relay = TurnCounter((server.host, server.port))
    await relay.start()
    configure(server.settings(port=relay.port, pool_size=1, max_overflow=0, pool_pre_ping_idle_seconds=0.3))
    try:
        await own_id(server.backend)  # connects
        relay.turns = 0
        await own_id(server.backend)
        busy = relay.turns
        await asyncio.sleep(0.5)
        relay.turns = 0
        await own_id(server.backend)
        idle = relay.turns
    finally:
        await dispose_engine()
        configure(None)
        await relay.close()
    # PostgreSQL: BEGIN, the statement, COMMIT; MySQL has no BEGIN.
    assert busy == (3 if server.backend == "postgres" else 2)
    assert idle > busy, "a connection idle longer than DB_POOL_PRE_PING_IDLE_SECONDS was not pinged"
