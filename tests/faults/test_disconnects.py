"""Clients that hang up mid-request and mid-streaming-response, against a real uvicorn server.

The clients are raw sockets in the test's event loop; uvicorn serves in a
thread with a loop of its own (:func:`dbtests.http.running_uvicorn`). Half of
them close politely (FIN), half reset the connection (RST).

- Mid-request: ``POST /work/{n}`` (``TransactionDep``) inserts ``ROWS`` rows,
  flushes, runs a slow query and answers; the client hangs up at a random
  moment, before or after the answer (every tenth one after it). With ``?check=1`` the endpoint asks
  ``request.is_disconnected()`` before returning and raises when the client
  is gone, so that its transaction is rolled back.
- Mid-stream: a ``StreamingResponse`` whose generator streams rows from the
  database with ``session.stream()`` and small sleeps, either on the
  request's ``SessionDep`` or inside a ``UnitOfWork`` of its own that first
  inserts a marker row; the client reads the first chunk and hangs up.

Afterwards the server still answers, every session of the app has ended its
transaction, its pool has nothing checked out and the server shows no session
idle in transaction; after shutdown (the autouse leak check) nothing leaked.
Rows: each request's are stored completely or not at all, exactly when the
database committed them, and every answered request's are stored.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Integer, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db_core import DatabaseSettings, UnitOfWork, dispose_engine, get_engine
from db_fastapi import SessionDep, TransactionDep, db_lifespan
from dbtests.http import running_uvicorn
from dbtests.leaks import FaultReport
from dbtests.queries import sleep_query
from dbtests.servers import admin, backend_settings, fresh_tables

REQUESTS = 100
STREAMS = 100
AT_ONCE = 10  # clients at a time
ROWS = 3  # rows per request, so that a half-stored request would show
SLOW_SECONDS = 0.1  # the endpoint's slow query; clients hang up within 0-3x that
STREAM_ROWS = 5_000
CHUNK_ROWS = 100  # rows per chunk of the streamed response
CHUNK_SECONDS = 0.01  # a pause after each chunk: a whole stream takes at least 0.5 s
STREAM_BASE = 1_000  # request numbers of the streams
HANG_GUARD_SECONDS = 60.0  # a guard against a hanging test, not a bound on speed


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "fault_disconnect_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    request: Mapped[int] = mapped_column(Integer, index=True)
    seq: Mapped[int] = mapped_column(Integer)


@dataclass
class ServerSide:
    """What the app saw, by request number (written in uvicorn's thread, read once it is quiet)."""

    started: set[int] = field(default_factory=set)
    committed: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)  # the session's transaction ended: committed or rolled back
    aborted: set[int] = field(default_factory=set)  # the endpoint saw its client gone and raised
    streams_finished: set[int] = field(default_factory=set)  # a generator that sent every row
    generators_done: set[int] = field(default_factory=set)  # a generator that was closed, one way or another

    def watch(self, session: AsyncSession, request: int) -> None:
        sync = session.sync_session
        event.listen(sync, "after_commit", lambda _session: self.committed.add(request))

        def ended(_session: Any, transaction: Any) -> None:
            if transaction.parent is None:
                self.ended.add(request)

        event.listen(sync, "after_transaction_end", ended)


def disconnect_app(backend: str, seen: ServerSide) -> FastAPI:
    app = FastAPI(lifespan=db_lifespan())
    slow = sleep_query(backend, SLOW_SECONDS)
    big = text(
        f"SELECT g FROM generate_series(1, {STREAM_ROWS}) AS g"
        if backend == "postgres"
        else f"SELECT seq FROM seq_1_to_{STREAM_ROWS}"
    )

    @app.post("/work/{number}")
    async def work(number: int, request: Request, session: TransactionDep, check: bool = False) -> dict[str, int]:
        seen.started.add(number)
        seen.watch(session, number)
        session.add_all(Row(request=number, seq=seq) for seq in range(ROWS))
        await session.flush()
        await session.execute(text(slow))
        if check and await request.is_disconnected():
            seen.aborted.add(number)
            raise HTTPException(status_code=499, detail="the client closed the request")
        return {"request": number}

    async def chunks(session: AsyncSession) -> AsyncIterator[str]:
        result = await session.stream(big)
        async for part in result.partitions(CHUNK_ROWS):
            yield "".join(f"{value}\n" for (value,) in part)
            await asyncio.sleep(CHUNK_SECONDS)

    @app.get("/stream/session/{number}")
    async def stream_on_request_session(number: int, session: SessionDep) -> StreamingResponse:
        seen.started.add(number)
        seen.watch(session, number)

        async def body() -> AsyncIterator[str]:
            try:
                async for chunk in chunks(session):
                    yield chunk
                seen.streams_finished.add(number)
            finally:
                seen.generators_done.add(number)

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/stream/unit/{number}")
    async def stream_in_unit_of_work(number: int) -> StreamingResponse:
        seen.started.add(number)

        async def body() -> AsyncIterator[str]:
            try:
                async with UnitOfWork() as session:
                    seen.watch(session, number)
                    session.add(Row(request=number, seq=0))
                    await session.flush()
                    async for chunk in chunks(session):
                        yield chunk
                    seen.streams_finished.add(number)
            finally:
                seen.generators_done.add(number)

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/pool")
    async def pool() -> dict[str, int]:
        return {"checked_out": get_engine().pool.checkedout()}  # type: ignore[attr-defined]

    @app.get("/rows")
    async def rows(session: SessionDep) -> dict[str, int]:
        return {"rows": await session.scalar(select(func.count()).select_from(Row)) or 0}

    return app


# -- clients ------------------------------------------------------------------------------------------------------


def hang_up(writer: asyncio.StreamWriter, reset: bool) -> None:
    if reset:
        # SO_LINGER 0: close() sends RST instead of FIN.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def request_then_hang_up(port: int, path: str, after: float, reset: bool) -> int | None:
    """Send ``POST path``; the status if the whole answer came within ``after`` seconds, else None."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n".encode())
        await writer.drain()
        try:
            async with asyncio.timeout(after):
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                assert length is not None, head
                await reader.readexactly(int(length.group(1)))
        except TimeoutError:
            return None
        return int(head.split(b" ", 2)[1])
    finally:
        hang_up(writer, reset)
        with suppress(ConnectionError):
            await writer.wait_closed()


async def first_chunk_then_hang_up(port: int, path: str, reset: bool) -> int:
    """Send ``GET path``, read the headers and the first chunk of the body, hang up; the chunk's size."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert re.search(rb"(?im)^transfer-encoding: *chunked", head), head
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(size)
        return size
    finally:
        hang_up(writer, reset)
        with suppress(ConnectionError):
            await writer.wait_closed()


async def in_batches(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), AT_ONCE):
        results += await asyncio.gather(*(call() for call in calls[start : start + AT_ONCE]))
    return results


# -- the test -----------------------------------------------------------------------------------------------------


@pytest.fixture(params=["postgres", "mysql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseSettings]:
    """A fresh ``fault_disconnect_rows`` table; the engines disposed afterwards."""
    settings = backend_settings(
        request, request.param, tmp_path, pool_size=AT_ONCE, max_overflow=AT_ONCE, pool_timeout_seconds=30
    )
    async with fresh_tables(settings, Base.metadata):
        await dispose_engine()  # the server's loop makes its own
        yield settings


async def test_clients_hang_up_mid_request_and_mid_stream(
    database: DatabaseSettings, fault_report: FaultReport
) -> None:
    backend = database.type or ""
    seen = ServerSide()
    rng = random.Random(7_000 + REQUESTS)
    work = range(REQUESTS)
    streams = range(STREAM_BASE, STREAM_BASE + STREAMS)
    checked = {n for n in work if n % 2}
    unit_streams = {n for n in streams if n % 2}
    with warnings.catch_warnings(record=True) as caught:
        # Not errors in uvicorn's thread: aiomysql's warning when it drains an unread result is the
        # behaviour under test (counted below); any other warning fails the test.
        warnings.simplefilter("always")
        with running_uvicorn(disconnect_app(backend, seen)) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            statuses = await in_batches(
                [
                    lambda n=n: request_then_hang_up(
                        port,
                        f"/work/{n}" + ("?check=1" if n in checked else ""),
                        # Every tenth client waits for its answer: some always get through.
                        HANG_GUARD_SECONDS if n % 10 == 0 else rng.uniform(0, 3 * SLOW_SECONDS),
                        reset=n % 4 >= 2,
                    )
                    for n in work
                ]
            )
            sizes = await in_batches(
                [
                    lambda n=n: first_chunk_then_hang_up(
                        port, f"/stream/{'unit' if n in unit_streams else 'session'}/{n}", reset=n % 4 >= 2
                    )
                    for n in streams
                ]
            )
            with httpx2.Client(base_url=base_url, timeout=10) as client:
                wait_until_quiet(client, seen, streams)
                served_rows = client.get("/rows").json()["rows"]
            idle = await idle_in_transaction(backend, database.name or "")
    drained = [w for w in caught if "unbuffered result was left incomplete" in str(w.message)]
    others = [f"{w.category.__name__}: {w.message}" for w in caught if w not in drained]

    stored = await stored_rows()
    answered = {n: status for n, status in zip(work, statuses, strict=True) if status is not None}
    cut = set(work) - set(answered)
    stored_work = {n: count for n, count in stored.items() if n in work}
    lost = sum(ROWS - stored.get(n, 0) for n in (seen.committed & set(work)) | set(answered))
    consistent = {n for n in cut if n not in seen.started or (n in seen.ended and _whole(stored, n, seen))}
    fault_report.add(
        "client hung up mid-request", backend, injected=len(cut), recovered=len(consistent), rows_lost=lost
    )
    streams_cut = {n for n, size in zip(streams, sizes, strict=True) if size > 0} - seen.streams_finished
    streams_ok = {n for n in streams_cut if n in seen.generators_done & seen.ended and _whole(stored, n, seen, 1)}
    fault_report.add("client hung up mid-stream", backend, injected=len(streams_cut), recovered=len(streams_ok))

    counts = (
        f"{len(answered)} answered before the hang-up, {len(cut)} cut "
        f"({len(cut - seen.started)} never reached the endpoint, {len(seen.aborted)} aborted by the endpoint); "
        f"{len(streams_cut)} streams cut, {len(seen.streams_finished)} finished first, "
        f"{len(drained)} unread stream results drained"
    )
    assert not others, others
    assert not idle, idle
    assert set(answered.values()) <= {200}, answered
    # Each request's rows: all or none, exactly when committed, and always when answered.
    partial = {n: count for n, count in stored_work.items() if count != ROWS}
    assert not partial, f"requests stored in part (request: rows): {partial}; {counts}"
    assert set(stored_work) == seen.committed & set(work), counts
    assert lost == 0, counts
    assert not seen.aborted & set(stored_work)
    assert seen.aborted <= checked & cut
    assert seen.started & set(work) <= seen.ended, sorted(seen.started - seen.ended)
    # Every stream was closed and its transaction ended; a unit of work's marker row is stored
    # exactly when its stream finished (and it committed).
    assert set(streams) <= seen.started & seen.generators_done & seen.ended
    assert stored.keys() & set(streams) == seen.committed & set(streams) == seen.streams_finished & unit_streams
    assert served_rows == sum(stored.values())
    # The hang-ups came at every stage: before and after the answer, mid-stream.
    assert cut, counts
    assert answered, counts
    assert streams_cut, counts


def _whole(stored: dict[int, int], n: int, seen: ServerSide, rows: int = ROWS) -> bool:
    return stored.get(n, 0) == (rows if n in seen.committed else 0)


def wait_until_quiet(client: httpx2.Client, seen: ServerSide, streams: range) -> None:
    """Until every started request has ended its transaction and the app's pool has nothing checked out."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while True:
        pending = set(seen.started) - set(seen.ended)
        open_generators = set(streams) - set(seen.generators_done)
        checked_out = client.get("/pool").json()["checked_out"]
        if not pending and not open_generators and checked_out == 0:
            return
        assert time.monotonic() < deadline, (
            f"after {HANG_GUARD_SECONDS}s: transactions still open for {sorted(pending)}, generators not closed "
            f"for {sorted(open_generators)}, {checked_out} connection(s) checked out"
        )
        time.sleep(0.02)


async def idle_in_transaction(backend: str, database: str) -> list[Any]:
    if backend == "postgres":
        statement = (
            "SELECT pid, state, query FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND state LIKE 'idle in transaction%'"
        )
    else:
        statement = (
            "SELECT p.ID, p.COMMAND, t.trx_started FROM information_schema.PROCESSLIST p "
            "JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
            f"WHERE p.DB = '{database}' AND p.COMMAND = 'Sleep'"
        )
    return await admin(backend, [statement])


async def stored_rows() -> dict[int, int]:
    """Rows stored per request."""
    async with UnitOfWork() as session:
        return {n: count for n, count in await session.execute(select(Row.request, func.count()).group_by(Row.request))}
