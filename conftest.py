"""Fixtures shared by every test: real servers, throwaway databases, configured settings.

Servers: PostgreSQL at ``DB_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and MariaDB/MySQL at
``DB_TEST_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306/test``). Each test
run creates its own databases (and users) on them and drops them afterwards;
the shared ``test`` database is only used to connect. Without a server the
tests that need it are skipped with the reason; with ``CI=true`` or
``DB_TEST_REQUIRE_SERVERS=1`` they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db_core import DatabaseSettings, configure, dispose_engine, get_engine

REQUIRE_SERVERS = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get(
    "DB_TEST_REQUIRE_SERVERS", ""
) in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get("DB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("DB_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgres", "mysql")


@dataclass(frozen=True)
class Server:
    """A reachable server and a database created for this test run."""

    backend: str
    host: str
    port: int
    user: str
    password: str
    database: str

    def settings(self, **overrides: Any) -> DatabaseSettings:
        values: dict[str, Any] = {
            "type": self.backend,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "name": self.database,
            "_env_file": None,
        }
        values.update(overrides)
        return DatabaseSettings(**values)

    async def admin(self, *statements: str) -> list[Any]:
        """Run statements as the admin user on the shared database; returns the last result's rows."""
        return await _admin(self.backend, statements)


def _unavailable(what: str, url: str, exc: BaseException) -> None:
    masked = make_url(url).render_as_string(hide_password=True)
    reason = f"{what} not reachable at {masked}: {type(exc).__name__}: {exc}"
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (servers are required: CI=true or DB_TEST_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(f"{reason}; start it or set DB_TEST_{what.upper()}_URL")


async def _admin(backend: str, statements: tuple[str, ...] | list[str]) -> list[Any]:
    url = make_url(POSTGRES_ADMIN_URL if backend == "postgres" else MYSQL_ADMIN_URL)
    rows: list[Any] = []
    if backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=5,
        )
        try:
            for statement in statements:
                rows = list(await conn.fetch(statement))
        finally:
            await conn.close()
    else:
        import aiomysql

        conn = await aiomysql.connect(
            host=url.host,
            port=url.port or 3306,
            user=url.username,
            password=url.password or "",
            db=url.database,
            connect_timeout=5,
            autocommit=True,
        )
        try:
            async with conn.cursor() as cursor:
                for statement in statements:
                    await cursor.execute(statement)
                    rows = list(await cursor.fetchall())
        finally:
            conn.close()
    return rows


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a loop of its own, also when called from a test that is already on one."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coro).result()


def _server(backend: str, admin_url: str) -> Iterator[Server]:
    name = f"db_test_{uuid.uuid4().hex[:12]}"
    try:
        _run(_admin(backend, [f"CREATE DATABASE {name}"]))
    except Exception as exc:
        _unavailable(backend, admin_url, exc)
    url = make_url(admin_url)
    default_port = 5432 if backend == "postgres" else 3306
    yield Server(
        backend, url.host or "127.0.0.1", url.port or default_port, url.username or "", url.password or "", name
    )
    drop = f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if backend == "postgres" else "")
    _run(_admin(backend, [drop]))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A database of its own on the PostgreSQL server, for this test run."""
    yield from _server("postgres", POSTGRES_ADMIN_URL)


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[Server]:
    """A database of its own on the MariaDB/MySQL server, for this test run."""
    yield from _server("mysql", MYSQL_ADMIN_URL)


def backend_settings(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, **overrides: Any
) -> DatabaseSettings:
    """Settings for ``backend``: a fresh SQLite file, or this run's database on the server."""
    if backend == "sqlite":
        return DatabaseSettings(type="sqlite", name=str(tmp_path / "test.db"), _env_file=None, **overrides)
    server: Server = request.getfixturevalue(f"{backend}_server")
    return server.settings(**overrides)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    """Settings for each backend in turn (a test using it runs three times)."""
    return backend_settings(request, request.param, tmp_path)


@pytest.fixture
async def db(settings: DatabaseSettings) -> AsyncIterator[DatabaseSettings]:
    """The db_core singletons configured with :func:`settings`, disposed afterwards."""
    configure(settings)
    try:
        yield settings
    finally:
        await dispose_engine()
        configure(None)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own DB_* variables."""
    for key in list(os.environ):
        if (key.upper().startswith("DB_") and not key.upper().startswith("DB_TEST_")) or key.upper() == "DATABASE_URL":
            monkeypatch.delenv(key)


class Base(DeclarativeBase):
    pass


class User(Base):
    """The seed's example model."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class Profile(Base):
    """The seed's second model, with a foreign key to users."""

    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    bio: Mapped[str] = mapped_column(String(200), default="")


@pytest.fixture
async def schema(db: DatabaseSettings) -> AsyncIterator[SimpleNamespace]:
    """Fresh ``users`` and ``profiles`` tables in :func:`db`; the models as attributes."""
    engine = get_engine()
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield SimpleNamespace(Base=Base, User=User, Profile=Profile)
    async with get_engine().begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
