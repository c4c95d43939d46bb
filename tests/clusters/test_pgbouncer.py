"""PostgreSQL behind PgBouncer 1.18 in transaction mode, with one server connection for every client.

With ``default_pool_size=1`` every transaction of every client runs on the
same server connection, one after another: whatever one client leaves on it
(a prepared statement, a setting), the next one finds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from db_core import ConfigurationError, DatabaseSettings, UnitOfWork, configure, dispose_engine, get_engine
from dbtests.servers import PgBouncer, PostgresCluster, run_coroutine

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

CLIENTS = 20
UNITS = 200
CLIENTS_SCRIPT = Path(__file__).with_name("pgbouncer_clients.py")


@dataclass
class Bounced:
    server: PostgresCluster
    bouncer: PgBouncer

    def settings(self, **overrides: Any) -> DatabaseSettings:
        return self.server.settings(port=self.bouncer.port, password="", pool_size=2, max_overflow=0, **overrides)

    async def client(self) -> asyncpg.Connection:
        """A plain asyncpg connection through PgBouncer, as another application would open one."""
        return await asyncpg.connect(
            host=self.bouncer.host, port=self.bouncer.port, user="postgres", database="postgres", statement_cache_size=0
        )


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresCluster]:
    server = PostgresCluster()
    try:
        server.start()
        run_coroutine(server.admin("CREATE TABLE item (id serial PRIMARY KEY, client int, n int, note text)"))
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def bounced(server: PostgresCluster) -> Iterator[Bounced]:
    """PgBouncer with one server connection: every transaction finds what the one before left."""
    yield from _bouncer(server, 1)


@pytest.fixture(scope="module")
def bounced_3(server: PostgresCluster) -> Iterator[Bounced]:
    """PgBouncer with three server connections: a transaction may find none of what a client prepared."""
    yield from _bouncer(server, 3)


def _bouncer(server: PostgresCluster, pool_size: int) -> Iterator[Bounced]:
    bouncer = PgBouncer(server, pool_mode="transaction", pool_size=pool_size)
    try:
        bouncer.start()
        yield Bounced(server, bouncer)
    finally:
        bouncer.remove()


@pytest.fixture
async def cleanup() -> AsyncIterator[None]:
    yield
    await dispose_engine()
    configure(None)


def run_clients(bounced: Bounced, pgbouncer: str | None) -> list[str]:
    """20 clients of 200 mixed units each, in two worker processes of 10 clients; the errors they saw.

    Two processes, as an application with two workers: each process numbers
    asyncpg's prepared statements from 1, so both want the same names on the
    one server connection.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    env.update(
        DB_TYPE="postgres",
        DB_HOST=bounced.bouncer.host,
        DB_PORT=str(bounced.bouncer.port),
        DB_USER="postgres",
        DB_NAME="postgres",
        DB_POOL_SIZE="2",
        DB_MAX_OVERFLOW="0",
    )
    if pgbouncer:
        env["DB_PGBOUNCER"] = pgbouncer
    workers = [
        subprocess.Popen(
            [sys.executable, str(CLIENTS_SCRIPT), str(worker), str(CLIENTS // 2), str(UNITS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(2)
    ]
    errors: list[str] = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        errors += json.loads(out)
    return errors


@pytest.mark.parametrize(
    ("pool", "error"),
    [
        ("bounced", r'prepared statement "__asyncpg_stmt_\w+__" already exists'),
        ("bounced_3", r'prepared statement "__asyncpg_stmt_\w+__" does not exist'),
    ],
)
async def test_without_the_setting_asyncpg_s_prepared_statements_fail(
    pool: str, error: str, request: pytest.FixtureRequest
) -> None:
    """The control runs: asyncpg's prepared statements break behind PgBouncer in transaction mode."""
    bounced: Bounced = request.getfixturevalue(pool)
    errors = await asyncio.to_thread(run_clients, bounced, None)
    assert any(re.search(error, e) for e in errors), errors[:5]


@pytest.mark.parametrize("pool", ["bounced", "bounced_3"])
async def test_with_the_setting_many_clients_run_every_unit(pool: str, request: pytest.FixtureRequest) -> None:
    bounced: Bounced = request.getfixturevalue(pool)
    await bounced.server.admin("TRUNCATE item")
    errors = await asyncio.to_thread(run_clients, bounced, "transaction")
    assert errors == []
    inserted = await bounced.server.admin("SELECT count(*) FROM item")
    assert inserted[0][0] > CLIENTS * UNITS / 8


async def test_the_statement_timeout_works_and_no_setting_leaks(bounced: Bounced, cleanup: None) -> None:
    configure(bounced.settings(pgbouncer="transaction", statement_timeout_seconds=0.2))
    with pytest.raises(sa_exc.DBAPIError, match="statement timeout"):
        async with UnitOfWork() as session:
            await session.execute(text("SELECT pg_sleep(3)"))
    async with UnitOfWork(read_only=True) as session:
        assert await session.scalar(text("SHOW statement_timeout")) == "200ms"
        assert await session.scalar(text("SHOW transaction_read_only")) == "on"
    await dispose_engine()

    # The next client of the one server connection finds it as PgBouncer gave it out.
    other = await bounced.client()
    try:
        assert await other.fetchval("SHOW statement_timeout") == "0"
        assert await other.fetchval("SHOW transaction_read_only") == "off"
        # The check can fail: a plain SET, as a naive implementation sends, does stay for the next client.
        await other.execute("SET statement_timeout = 12345")
        after = await bounced.client()
        try:
            assert await after.fetchval("SHOW statement_timeout") == "12345ms"
            await after.execute("RESET ALL")
        finally:
            await after.close()
    finally:
        await other.close()


async def test_the_direct_url_bypasses_pgbouncer_for_session_level_work(bounced: Bounced, cleanup: None) -> None:
    server = bounced.server
    configure(bounced.settings(pgbouncer="transaction", direct_url=f"postgresql://{server.host}:{server.port}"))
    assert get_engine().url.port == bounced.bouncer.port
    direct = get_engine(direct=True)
    assert direct.url.port == server.port
    assert direct is get_engine(direct=True)
    # A session-level advisory lock outlives its transaction on the direct connection.
    async with direct.connect() as connection:
        assert await connection.scalar(text("SELECT pg_try_advisory_lock(42)")) is True
        await connection.commit()
        held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42"
        assert (await server.admin(held))[0][0] == 1
        await connection.execute(text("SELECT pg_advisory_unlock(42)"))


def test_the_setting_is_refused_on_other_backends(tmp_path: Any) -> None:
    from db_core import get_connector

    connector = get_connector(DatabaseSettings(type="sqlite", name=str(tmp_path / "x.db"), pgbouncer="transaction"))
    with pytest.raises(ConfigurationError, match="DB_PGBOUNCER=transaction is for PostgreSQL"):
        connector.create_engine()
    with pytest.raises(ConfigurationError, match="DB_PGBOUNCER"):
        DatabaseSettings(pgbouncer="statement")
