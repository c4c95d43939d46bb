"""Named databases (``DB_DATABASES__<NAME>__*``): each unit, dependency and query reaches its own database.

Three databases on three backends: the default one on PostgreSQL,
``analytics`` on MariaDB, ``local`` on a SQLite file. Each holds a marker
row naming it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from db_core import (
    UnitOfWork,
    UnknownDatabaseError,
    configure,
    dispose_engine,
    get_engine,
    get_sessionmaker,
    get_settings,
)
from db_fastapi import TransactionDep, db_lifespan, db_session, db_transaction
from dbtests.servers import Server

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

NAMES = ("default", "analytics", "local")
MARKER = text("SELECT name FROM which_database")
FIRST_MARKER = text("SELECT name FROM which_database WHERE name <> 'written'")
# At module level: with postponed annotations FastAPI resolves an endpoint's annotations here.
AnalyticsDep = Annotated[AsyncSession, Depends(db_transaction("analytics"), scope="function")]
LocalDep = Annotated[AsyncSession, Depends(db_session("local"))]


@pytest.fixture
async def databases(
    postgres_server: Server, mysql_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, Server | Path]]:
    """The three databases configured through the environment alone, each with its marker table."""
    pg, my = postgres_server, mysql_server
    monkeypatch.setenv("DB_URL", f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.database}")
    monkeypatch.setenv("DB_DATABASES__ANALYTICS__URL", f"mysql://{my.user}@{my.host}:{my.port}/{my.database}")
    monkeypatch.setenv("DB_DATABASES__ANALYTICS__POOL_SIZE", "2")
    monkeypatch.setenv("DB_DATABASES__LOCAL__TYPE", "sqlite")
    monkeypatch.setenv("DB_DATABASES__LOCAL__NAME", str(tmp_path / "local.db"))
    configure(None)
    for name in NAMES:
        async with get_engine(name).begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS which_database"))
            await connection.execute(text("CREATE TABLE which_database (name VARCHAR(20))"))
            await connection.execute(text("INSERT INTO which_database VALUES (:name)"), {"name": name})
    yield {"default": pg, "analytics": my, "local": tmp_path / "local.db"}
    for name in NAMES:
        async with get_engine(name).begin() as connection:
            await connection.execute(text("DROP TABLE which_database"))
    await dispose_engine()


async def test_settings_come_from_nested_variables(databases: dict[str, Server | Path]) -> None:
    settings = get_settings()
    assert settings.database_names == NAMES
    assert settings.database("analytics").type == "mysql"
    assert settings.database("analytics").pool_size == 2
    assert settings.database("ANALYTICS") is settings.database("analytics")
    assert settings.database("local").name == str(databases["local"])
    assert settings.database() is settings
    assert get_engine("analytics").pool.size() == 2  # type: ignore[attr-defined]


async def test_units_of_work_and_queries_reach_their_database(databases: dict[str, Server | Path]) -> None:
    for name in NAMES:
        async with UnitOfWork(database=name) as session:
            assert await session.scalar(MARKER) == name
            await session.execute(text("INSERT INTO which_database VALUES ('written')"))
        async with UnitOfWork(database=name, read_only=True) as session:
            assert await session.scalar(text("SELECT count(*) FROM which_database")) == 2
        async with get_sessionmaker(name)() as session:
            assert await session.scalar(FIRST_MARKER) == name
    assert get_engine() is get_engine("default")
    # A unit of another database opened inside one is a transaction of its own, not a savepoint.
    async with UnitOfWork() as outer:
        async with UnitOfWork(database="local") as inner:
            assert inner is not outer
            assert await inner.scalar(FIRST_MARKER) == "local"
        assert await outer.scalar(FIRST_MARKER) == "default"


async def test_fastapi_dependencies_reach_their_database(databases: dict[str, Server | Path]) -> None:
    app = FastAPI(lifespan=db_lifespan())

    @app.get("/which")
    async def which(default: TransactionDep, analytics: AnalyticsDep, local: LocalDep) -> list[str | None]:
        return [await session.scalar(MARKER) for session in (default, analytics, local)]

    @app.post("/analytics")
    async def write(analytics: AnalyticsDep) -> None:
        await analytics.execute(text("INSERT INTO which_database VALUES ('from-api')"))

    await dispose_engine()  # the app's own loop makes its engines
    with TestClient(app) as client:
        assert client.get("/which").json() == list(NAMES)
        assert client.post("/analytics").status_code == 200
    async with UnitOfWork(database="analytics") as session:
        assert await session.scalar(text("SELECT count(*) FROM which_database WHERE name = 'from-api'")) == 1


async def test_dispose_closes_every_database_s_connections(databases: dict[str, Server | Path]) -> None:
    pg, my = databases["default"], databases["analytics"]
    assert isinstance(pg, Server)
    assert isinstance(my, Server)
    for name in NAMES:
        async with UnitOfWork(database=name) as session:
            await session.execute(MARKER)
    pg_count = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{pg.database}' AND pid <> pg_backend_pid()"
    my_count = f"SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = '{my.database}'"
    assert (await pg.admin(pg_count))[0][0] >= 1
    assert (await my.admin(my_count))[0][0] >= 1
    await dispose_engine()
    assert (await pg.admin(pg_count))[0][0] == 0
    assert (await my.admin(my_count))[0][0] == 0


async def test_an_unknown_name_lists_the_configured_ones(databases: dict[str, Server | Path]) -> None:
    for attempt in (lambda: get_engine("reporting"), lambda: get_sessionmaker("reporting")):
        with pytest.raises(UnknownDatabaseError, match="reporting") as unknown:
            attempt()
        assert "default, analytics, local" in str(unknown.value)
        assert "DB_DATABASES__REPORTING__URL" in str(unknown.value)
    with pytest.raises(UnknownDatabaseError):
        async with UnitOfWork(database="reporting"):
            pass
