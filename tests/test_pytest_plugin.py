"""db-pytest, as a user's project runs it: the README's example suite (examples/testing) in a pytest of its own.

Each run is a real ``python -m pytest`` in a copy of the example project, with
only ``DB_*`` pointing at a database of this test run: the plugin must create
one test database beside it, roll every test back, drop it at the end, and
never write to the configured database.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbtests.projects import user_environment
from dbtests.servers import Server, admin, database_exists, mysql_statements, postgres_statements, run_coroutine

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "testing"
EXAMPLE_TESTS = 30
TIMEOUT = 240
# The example's tables; a test database that holds anything else was not made by this run.
TABLES = ["notes", "users"]


@dataclass
class Project:
    """A copy of the example project configured for one backend, and what its runs showed."""

    path: Path
    backend: str
    env: dict[str, str]
    test_database: str
    server: Server | None

    def pytest(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def query(self, statement: str, database: str | None = None) -> list[Any]:
        """The rows of ``statement`` on ``database`` (default: the test database)."""
        database = database or self.test_database
        if self.server is None:
            with closing(sqlite3.connect(database)) as connection, connection:
                return connection.execute(statement).fetchall()
        s = self.server
        login = {"host": s.host, "port": s.port, "user": s.user, "password": s.password}
        if self.backend == "postgres":
            return list(run_coroutine(postgres_statements([statement], database=database, timeout=5, **login)))
        return list(run_coroutine(mysql_statements([statement], db=database, **login)))

    def exists(self, database: str | None = None) -> bool:
        database = database or self.test_database
        if self.server is None:
            return Path(database).exists()
        return database_exists(self.backend, database)

    def tables(self, database: str | None = None) -> list[str] | None:
        """The tables of ``database`` (default: the test database), ``None`` if it does not exist."""
        if not self.exists(database):
            return None
        statement = {
            "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
            "postgres": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            "mysql": "SHOW TABLES",
        }[self.backend]
        return sorted(row[0] for row in self.query(statement, database))

    def count_users(self) -> int:
        return int(self.query("SELECT count(*) FROM users")[0][0])

    def make_leftover(self) -> None:
        """A test database as a killed run leaves it: here, with a table of its own."""
        if self.server is not None:
            run_coroutine(admin(self.backend, [f"CREATE DATABASE {self.test_database}"]))
        self.query("CREATE TABLE leftover (id INT)")

    def drop_test_database(self) -> None:
        if self.server is None:
            Path(self.test_database).unlink(missing_ok=True)
            return
        if self.exists():  # no IF EXISTS: MariaDB's note about a missing database is a Warning, an error here
            force = " WITH (FORCE)" if self.backend == "postgres" else ""
            run_coroutine(admin(self.backend, [f"DROP DATABASE {self.test_database}{force}"]))


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """The example project, its DB_* pointing at a database of this run (SQLite: a file in tmp_path)."""
    path = tmp_path / "project"
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    backend = request.param
    if backend == "sqlite":
        configured = tmp_path / "app.db"
        env = user_environment(DB_TYPE="sqlite", DB_NAME=str(configured))
        yield Project(path, backend, env, str(tmp_path / "test_app.db"), None)
        return
    server: Server = request.getfixturevalue(f"{backend}_server")
    scheme = "postgresql" if backend == "postgres" else "mysql"
    url = f"{scheme}://{server.user}@{server.host}:{server.port}/{server.database}"
    project = Project(path, backend, user_environment(DB_URL=url), f"test_{server.database}", server)
    yield project
    project.drop_test_database()


def summary(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    """The plugin's lines in the terminal summary: (database file or name, what happened)."""
    _, _, tail = result.stdout.partition("db: test databases")
    lines = [line for line in tail.splitlines()[1:] if line.startswith("'")]
    return [(Path(line.split("'")[1]).name, line.rpartition(": ")[2]) for line in lines]


def show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-3000:]}"


def test_one_test_database_per_run_and_every_test_rolled_back(project: Project, tmp_path: Path) -> None:
    project.make_leftover()
    record = tmp_path / "databases.txt"
    result = project.pytest("-W", "error", env={"EXAMPLE_RECORD_DATABASE": str(record)})
    assert result.returncode == 0, show(result)
    assert f"{EXAMPLE_TESTS} passed" in result.stdout, show(result)
    name = Path(project.test_database).name
    # Exactly one database, created once (the leftover replaced) and dropped at the end.
    assert summary(result) == [(name, "created"), (name, "dropped")], show(result)
    assert Path(record.read_text().strip()).name == name
    assert project.tables() is None, "the test database outlived the run"
    # The configured database: never written (a fresh, empty database; for SQLite, never made).
    configured = str(tmp_path / "app.db") if project.server is None else project.server.database
    assert project.tables(configured) in (None, []), "the configured database was written"


def test_reuse_keeps_the_test_database_and_its_tables_empty(project: Project) -> None:
    first = project.pytest("--db-reuse")
    assert first.returncode == 0, show(first)
    name = Path(project.test_database).name
    assert summary(first) == [(name, "created"), (name, "kept (--db-reuse)")], show(first)
    # 30 tests that all committed rows left none behind.
    assert project.tables() == TABLES
    assert project.count_users() == 0
    second = project.pytest("--db-reuse", "-q", "tests/test_units.py")
    assert second.returncode == 0, show(second)
    assert summary(second) == [(name, "reused (--db-reuse)"), (name, "kept (--db-reuse)")], show(second)
    assert project.count_users() == 0
    if project.backend == "sqlite":  # the same code on every backend
        recreated = project.pytest("--db-reuse", "--db-create", "-q", "tests/test_api.py")
        assert summary(recreated)[0] == (name, "created"), show(recreated)
        assert project.tables() == TABLES
    third = project.pytest("-q", "tests/test_isolation.py")  # without the option: dropped at the end
    assert third.returncode == 0, show(third)
    assert project.tables() is None


# Every combination on SQLite, two of them on each server.
MODES = [
    *(("sqlite", mode, scope) for mode in ("strict", "auto") for scope in ("function", "module", "session")),
    *((server, *pair) for server in ("postgres", "mysql") for pair in (("strict", "module"), ("auto", "session"))),
]


@pytest.mark.parametrize(("project", "mode", "scope"), MODES, indirect=["project"])
def test_pytest_asyncio_modes_and_loop_scopes(project: Project, mode: str, scope: str) -> None:
    result = project.pytest(
        "-W",
        "error",
        "-o",
        f"asyncio_mode={mode}",
        "-o",
        f"asyncio_default_fixture_loop_scope={scope}",
        "-o",
        f"asyncio_default_test_loop_scope={scope}",
    )
    assert result.returncode == 0, show(result)
    assert f"{EXAMPLE_TESTS} passed" in result.stdout, show(result)


@pytest.mark.parametrize("project", ["sqlite"], indirect=True)
def test_a_fixture_loop_other_than_the_test_s_is_named(project: Project) -> None:
    result = project.pytest("-q", "-o", "asyncio_default_test_loop_scope=module", "tests/test_units.py")
    assert result.returncode == 1, show(result)
    # The code under test would otherwise have committed for good, outside the test's transaction.
    assert "set asyncio_default_fixture_loop_scope and asyncio_default_test_loop_scope to the same scope" in (
        result.stdout
    ), show(result)
    assert project.tables() is None


RECORDER = """
import os
from db_core import get_settings

def pytest_runtest_call(item):
    with open(os.environ["RECORD"], "a") as out:
        out.write(f"{os.environ.get('PYTEST_XDIST_WORKER')} {get_settings().name}\\n")
"""


@pytest.mark.parametrize("project", ["postgres", "mysql"], indirect=True)
def test_each_xdist_worker_gets_its_own_database(project: Project, tmp_path: Path) -> None:
    (project.path / "recorder.py").write_text(RECORDER, encoding="utf-8")
    record = tmp_path / "workers.txt"
    result = project.pytest("-n", "4", "-p", "recorder", env={"RECORD": str(record)})
    assert result.returncode == 0, show(result)
    assert f"{EXAMPLE_TESTS} passed" in result.stdout, show(result)
    used = {tuple(line.split()) for line in record.read_text().splitlines()}
    workers = {worker for worker, _name in used}
    assert workers == {"gw0", "gw1", "gw2", "gw3"}, used
    for worker, name in used:
        assert Path(name).name == Path(project.test_database).name.replace("test_app", f"test_app_{worker}") or (
            name == f"{project.test_database}_{worker}"
        ), used
    # None of the four remains.
    for worker in workers:
        if project.server is None:
            assert not Path(project.test_database.replace("test_app", f"test_app_{worker}")).exists()
        else:
            assert project.tables(f"{project.test_database}_{worker}") is None


@pytest.mark.parametrize("project", ["sqlite"], indirect=True)
def test_settings_errors_reach_only_the_tests_that_use_a_database(project: Project) -> None:
    (project.path / "tests" / "test_plain.py").write_text("def test_plain():\n    assert True\n", encoding="utf-8")
    result = project.pytest(
        "-q", "tests/test_plain.py", "tests/test_isolation.py", env={"DB_POOL_SIZE": "many", "DB_PASSWORD": "s3cr3t"}
    )
    assert result.returncode == 1, show(result)
    assert re.search(r"1 passed, .*3 errors", result.stdout), show(result)
    assert "DB_POOL_SIZE" in result.stdout, show(result)
    assert "s3cr3t" not in result.stdout + result.stderr


def test_the_readme_shows_the_example_s_own_code() -> None:
    """Each block of the README's "Testing" section that names an example file is a verbatim part of it."""
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Testing\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\w+\n# (examples/testing/\S+)\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 3, section
    for path, code in blocks:
        source = (EXAMPLE.parents[1] / path).read_text(encoding="utf-8")
        assert code.strip() in source, f"the README's block for {path} is not in the file"


NAMED = """
import pytest
from sqlalchemy import Integer, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import service
from db_core import UnitOfWork, get_engine


class Analytics(DeclarativeBase):
    pass


class Event(Analytics):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


@pytest.mark.parametrize("attempt", range(3))
async def test_both_databases_are_rolled_back(db_session, db_engine, attempt):
    assert db_engine is get_engine()
    async with UnitOfWork(database="analytics") as session:
        assert await session.scalar(select(func.count()).select_from(Event)) == 0
        session.add(Event())
    await service.register("ada@example.com")
    async with UnitOfWork(database="analytics") as session:
        assert await session.scalar(select(func.count()).select_from(Event)) == 1
    assert "test_analytics" in get_engine("analytics").url.database
"""


@pytest.mark.parametrize("project", ["sqlite"], indirect=True)
def test_named_databases_get_test_databases_too(project: Project, tmp_path: Path) -> None:
    (project.path / "tests" / "test_named.py").write_text(NAMED, encoding="utf-8")
    (project.path / "pytest.ini").write_text(
        "[pytest]\npythonpath = . tests\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "asyncio_default_test_loop_scope = function\nfilterwarnings = error\n"
        "db_metadata =\n    service:Base\n    analytics = test_named:Analytics\n",
        encoding="utf-8",
    )
    analytics = tmp_path / "analytics.db"
    env = {"DB_DATABASES__ANALYTICS__TYPE": "sqlite", "DB_DATABASES__ANALYTICS__NAME": str(analytics)}
    result = project.pytest("tests/test_named.py", env=env)
    assert result.returncode == 0, show(result)
    assert summary(result) == [
        ("test_app.db", "created"),
        ("test_analytics.db", "created"),
        ("test_app.db", "dropped"),
        ("test_analytics.db", "dropped"),
    ], show(result)
    assert not analytics.exists(), "the configured named database was touched"
    assert not (tmp_path / "test_analytics.db").exists()


@pytest.mark.parametrize("project", ["sqlite", "postgres"], indirect=True)
def test_migrations_build_the_test_database(project: Project) -> None:
    db = Path(sys.executable).parent / "db"

    def migrate(*args: str) -> None:
        done = subprocess.run(
            [db, "migrate", *args], cwd=project.path, env=project.env, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    migrate("init")
    env_py = project.path / "migrations" / "env.py"
    models = "from service import Base\ntarget_metadata = Base.metadata"
    env_py.write_text(env_py.read_text().replace("target_metadata = None", models))
    migrate("revision", "--autogenerate", "-m", "users and notes")
    pyproject = project.path / "pyproject.toml"
    schema = pyproject.read_text().replace('db_metadata = ["service:Base"]', 'db_migrations = ["alembic.ini"]')
    pyproject.write_text(schema)
    result = project.pytest("--db-reuse")
    assert result.returncode == 0, show(result)
    assert f"{EXAMPLE_TESTS} passed" in result.stdout, show(result)
    assert project.tables() == ["alembic_version", *TABLES]
    assert project.count_users() == 0
