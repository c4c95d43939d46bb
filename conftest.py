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

import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from db_core import DatabaseSettings, configure, dispose_engine, get_engine
from dbtests.models import Base, Profile, User
from dbtests.servers import (
    BACKENDS,
    MYSQL_ADMIN_URL,
    POSTGRES_ADMIN_URL,
    Server,
    backend_settings,
    shared_server,
)

_TESTS = Path(__file__).parent / "tests"
# Suites a matrix environment may leave to the others (hatch.toml sets DB_TEST_SKIP=faults,...).
_SUITES: dict[str, Callable[[Path], bool]] = {
    "faults": lambda path: _TESTS / "faults" in path.parents,
    "clusters": lambda path: _TESTS / "clusters" in path.parents,
    "packaging": lambda path: path == _TESTS / "test_packaging.py",
    "plugin": lambda path: path == _TESTS / "test_pytest_plugin.py",
    "migrations": lambda path: path == _TESTS / "test_migrations.py",
    "shell": lambda path: path == _TESTS / "test_shell.py",
    "init": lambda path: path == _TESTS / "test_init.py",
    "conduit": lambda path: path == _TESTS / "test_conduit.py",
}


def pytest_configure(config: pytest.Config) -> None:
    # The Python subprocesses of the tests (the db command, uvicorn, the example projects' pytest)
    # share one bytecode cache outside the tree: where PYTHONDONTWRITEBYTECODE is set and the
    # environment was installed without bytecode, each would compile SQLAlchemy anew (~2 s each).
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "db-tests-pycache"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skipped = {name.strip() for name in os.environ.get("DB_TEST_SKIP", "").split(",") if name.strip()}
    if skipped - _SUITES.keys():
        raise pytest.UsageError(f"DB_TEST_SKIP: unknown suite(s) {sorted(skipped - _SUITES.keys())}")
    for name in skipped:
        marker = pytest.mark.skip(reason=f"DB_TEST_SKIP={name}: another matrix environment runs this suite")
        for item in items:
            if _SUITES[name](Path(str(item.fspath))):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A database of its own on the PostgreSQL server, for this test run."""
    yield from shared_server("postgres", POSTGRES_ADMIN_URL)


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[Server]:
    """A database of its own on the MariaDB/MySQL server, for this test run."""
    yield from shared_server("mysql", MYSQL_ADMIN_URL)


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
