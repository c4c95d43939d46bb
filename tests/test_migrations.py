"""``db migrate`` and ``db_core.migrations``: Alembic on the database of the ``DB_*`` settings.

The command runs as a real subprocess (the ``db`` script of the environment)
from a project directory of the test's own, with a small models module on
``PYTHONPATH`` and only ``DB_*`` variables to find the database: on
PostgreSQL and MariaDB as a user whose password is full of URL syntax, in a
database of the test's own; on SQLite in a file whose path holds ``%`` and a
space. Everything the commands print and every file they leave is swept for
the password. The programmatic ``await upgrade("head")`` runs in a real
uvicorn's lifespan. The Migrations section of the README is run as written.

Subprocesses share a bytecode cache (``PYTHONPYCACHEPREFIX``, set by the root
conftest), so a rewritten models module gets a new modification time.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from db_core import DatabaseSettings, UnitOfWork, configure, dispose_engine, get_connector, get_engine
from db_core.migrations import init, upgrade
from db_fastapi import db_lifespan
from dbtests.http import running_uvicorn
from dbtests.secrets import Login, assert_no_secret
from dbtests.servers import BACKENDS, admin, run_coroutine

pytest_plugins = ["dbtests.secrets"]

ROOT = Path(__file__).resolve().parents[1]
COMMAND_SECONDS = 60  # a hang guard per command, not a performance bound

MODELS = """\
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(50))
"""

FIRST_MIGRATION = '''\
"""create items"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50)))


def downgrade() -> None:
    op.drop_table("items")
'''


# --- where the migrations run -------------------------------------------------------------------------------------


@dataclass
class Target:
    """A database of the test's own: the ``DB_*`` variables of the command, the settings of the test process."""

    backend: str
    env: dict[str, str]
    settings: DatabaseSettings
    files: list[Path] = field(default_factory=list)  # beside the project: the SQLite file's directory

    def inspect(self) -> tuple[set[str], list[str]]:
        """The tables, and the rows of alembic_version (empty without the table)."""
        return run_coroutine(_inspect(self.settings))  # type: ignore[no-any-return]


async def _inspect(settings: DatabaseSettings) -> tuple[set[str], list[str]]:
    engine = get_connector(settings).create_engine()
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
            versions: list[str] = []
            if "alembic_version" in tables:
                rows = await connection.execute(sa.text("SELECT version_num FROM alembic_version"))
                versions = list(rows.scalars())
            return tables, versions
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Each backend in turn, with an empty database of the test's own."""
    backend = request.param
    if backend == "sqlite":
        folder = tmp_path / "da%ta dir"  # never handed to configparser, so "%" is just a character
        folder.mkdir()
        path = str(folder / "app.db")
        settings = DatabaseSettings(type="sqlite", name=path, _env_file=None)
        yield Target(backend, {"DB_TYPE": "sqlite", "DB_NAME": path}, settings, [folder])
        return
    login: Login = request.getfixturevalue(f"{backend}_login")
    name = f"db_test_mig_{uuid.uuid4().hex[:10]}"
    if backend == "postgres":
        # Its owner may create tables in its public schema (PostgreSQL 15 grants that to nobody else).
        create = [f"CREATE DATABASE {name} OWNER {login.user}"]
        drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    else:
        create = [f"CREATE DATABASE {name}", f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{login.user}'@'%'"]
        drop = f"DROP DATABASE IF EXISTS {name}"
    run_coroutine(admin(backend, create))
    try:
        own = replace(login, database=name)
        yield Target(backend, own.env(), own.settings())
    finally:
        run_coroutine(admin(backend, [drop]))


@dataclass
class Project:
    """A project directory with ``models.py``, where ``db migrate`` runs; keeps what every command printed."""

    path: Path
    env: dict[str, str]
    outputs: list[tuple[str, str]] = field(default_factory=list)
    writes: int = 0

    def db(self, *args: str, expect: int | None = 0, extra_env: dict[str, str] | None = None) -> str:
        """Run ``db ARGS``; asserts its exit status (unless ``expect`` is None); returns stdout + stderr."""
        command = shutil.which("db", path=str(Path(sys.executable).parent))
        argv = [command] if command else [sys.executable, "-m", "db_core"]
        result = subprocess.run(
            [*argv, *args],
            env={**self.env, **(extra_env or {})},
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=False,
        )
        where = f"db {' '.join(args)}"
        self.outputs += [(f"{where}: stdout", result.stdout), (f"{where}: stderr", result.stderr)]
        output = result.stdout + result.stderr
        if expect is not None:
            assert result.returncode == expect, f"{where}: exit {result.returncode}, not {expect}:\n{output}"
        return output

    def write_models(self, text: str) -> None:
        path = self.path / "models.py"
        path.write_text(text)
        # Bytecode is reused while the source's size and modification time (whole seconds) match.
        self.writes += 1
        stamp = time.time() + self.writes
        os.utime(path, (stamp, stamp))

    def use_models(self) -> None:
        """Point env.py's target_metadata at models.Base.metadata, as the template's comment says."""
        env_py = self.path / "migrations" / "env.py"
        text = env_py.read_text()
        assert "\ntarget_metadata = None\n" in text, text
        edited = "\nfrom models import Base\n\ntarget_metadata = Base.metadata\n"
        env_py.write_text(text.replace("\ntarget_metadata = None\n", edited))

    def assert_no_secret(self, *more: Path) -> None:
        """The password in none of the outputs and none of the files under the project (and ``more``)."""
        for where, text in self.outputs:
            assert_no_secret(text, where)
        for folder in (self.path, *more):
            for path in folder.rglob("*"):
                if path.is_file():
                    # latin-1 reads any byte: the UTF-8 spelling is then one of the forms looked for.
                    assert_no_secret(path.read_bytes().decode("latin-1"), str(path))


def base_env(target_env: dict[str, str], path: Path | None) -> dict[str, str]:
    """This environment less its ``DB_*``, plus ``target_env`` and ``path`` first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_") and k.upper() != "DATABASE_URL"}
    env.update(target_env)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


@pytest.fixture
def project(tmp_path: Path, target: Target) -> Project:
    path = tmp_path / "project"
    path.mkdir()
    (path / "models.py").write_text(MODELS)
    return Project(path, base_env(target.env, path))


def revision_file(project: Project, slug: str) -> str:
    found = list((project.path / "migrations" / "versions").glob(f"*_{slug}.py"))
    assert len(found) == 1, found
    return found[0].read_text()


# --- the command line, on each backend ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_whole_cycle_from_db_variables_alone(project: Project, target: Target) -> None:
    out = project.db("migrate", "init")
    assert "env.py" in out
    ini = (project.path / "alembic.ini").read_text()
    assert "sqlalchemy.url" not in ini.replace("# Do not add sqlalchemy.url", "")
    assert "script_location = %(here)s/migrations" in ini
    assert (project.path / "migrations" / "versions").is_dir()
    project.use_models()

    # No revision yet and an empty database: the models differ from it.
    out = project.db("migrate", "check", expect=1)
    assert "differ" in out
    assert "add_table items" in out

    project.db("migrate", "revision", "-m", "create items", "--autogenerate")
    script = revision_file(project, "create_items")
    assert "op.create_table(" in script
    assert "'items'" in script or '"items"' in script
    revision = re.search(r"^revision: str = ['\"](\w+)['\"]", script, re.MULTILINE)
    assert revision, script
    assert "items" not in target.inspect()[0]

    # The database is behind the scripts: check fails until upgraded.
    out = project.db("migrate", "check", expect=1)
    assert "not up to date" in out

    project.db("migrate", "upgrade")
    assert target.inspect() == ({"items", "alembic_version"}, [revision[1]])

    assert f"{revision[1]} (head)" in project.db("migrate", "current")
    assert f"-> {revision[1]} (head), create items" in project.db("migrate", "history")
    assert "No new upgrade operations detected" in project.db("migrate", "check")

    # A model that changes after the upgrade differs again.
    project.write_models(MODELS + "    note: Mapped[str | None] = mapped_column(String(20))\n")
    out = project.db("migrate", "check", expect=1)
    assert "add_column items.note" in out
    project.write_models(MODELS)

    sql = project.db("migrate", "upgrade", "head", "--sql")
    assert re.search(r"CREATE TABLE [`\"]?items", sql), sql
    assert "INSERT INTO alembic_version" in sql
    project.db("migrate", "downgrade", "-1")
    assert target.inspect() == ({"alembic_version"}, [])

    if target.backend != "sqlite":
        # A refused login: one line naming the failure, never the password.
        out = project.db("migrate", "current", expect=1, extra_env={"DB_USER": "db_test_nobody"})
        assert "Traceback" not in out
        assert "db migrate current:" in out
    project.assert_no_secret(*target.files)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sqlite"], indirect=True)
def test_sqlite_alter_column_keeps_the_rows(project: Project, target: Target) -> None:
    project.db("migrate", "init")
    project.use_models()
    project.db("migrate", "revision", "-m", "create items", "--autogenerate")
    project.db("migrate", "upgrade")
    with sqlite3.connect(target.settings.name or "") as connection:
        connection.executemany("INSERT INTO items (name) VALUES (?)", [("ada",), ("grace",), ("x" * 50,)])
    connection.close()

    longer = MODELS.replace("[str | None] = mapped_column(String(50))", "[str] = mapped_column(String(200))")
    assert longer != MODELS
    project.write_models(longer)
    project.db("migrate", "revision", "-m", "longer names", "--autogenerate")
    script = revision_file(project, "longer_names")
    assert "batch_alter_table" in script, script
    assert "String(length=200)" in script, script
    project.db("migrate", "upgrade")
    project.db("migrate", "check")

    with sqlite3.connect(target.settings.name or "") as connection:
        rows = connection.execute("SELECT name FROM items ORDER BY id").fetchall()
        schema = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'items'").fetchone()[0]
    connection.close()
    assert rows == [("ada",), ("grace",), ("x" * 50,)]
    assert "VARCHAR(200) NOT NULL" in schema, schema


@pytest.mark.parametrize("target", ["sqlite"], indirect=True)
def test_clear_errors(project: Project, target: Target) -> None:
    out = project.db("migrate", "current", expect=1)
    assert "alembic.ini not found: run `db migrate init`" in out
    assert len(out.splitlines()) == 1, out

    project.db("migrate", "init")
    out = project.db("migrate", "init", expect=1)
    assert "alembic.ini already exists" in out
    (project.path / "alembic.ini").rename(project.path / "kept.ini")
    out = project.db("migrate", "init", expect=1)
    assert "migrations already exists and is not empty" in out
    assert not (project.path / "alembic.ini").exists()

    out = project.db("migrate", "--config", "kept.ini", "upgrade", "nope", expect=1)
    assert "Can't locate revision identified by 'nope'" in out
    assert "Traceback" not in out

    out = project.db("migrate", "--config", "kept.ini", "--database", "analytics", "current", expect=2)
    assert "no database named 'analytics'" in out

    # An alembic.ini of Alembic's own template: its URL is ignored, said so, and never read nor shown.
    # And --database migrates a named database, not the DB_* one.
    ini = (project.path / "kept.ini").read_text()
    old_url = "sqlalchemy.url = driver://user:pa%ss@localhost/dbname\n"
    (project.path / "old.ini").write_text(ini.replace("[alembic]\n", f"[alembic]\n{old_url}"))
    (project.path / "migrations" / "versions" / "0001_create_items.py").write_text(FIRST_MIGRATION)
    analytics = project.path.parent / "analytics.db"
    named = {"DB_DATABASES__ANALYTICS__TYPE": "sqlite", "DB_DATABASES__ANALYTICS__NAME": str(analytics)}
    out = project.db("migrate", "--config", "old.ini", "--database", "analytics", "upgrade", extra_env=named)
    assert "old.ini sets sqlalchemy.url, which is ignored" in out
    assert "pa%ss" not in out
    assert "Running upgrade  -> 0001" in out
    settings = DatabaseSettings(type="sqlite", name=str(analytics), _env_file=None)
    assert Target("sqlite", {}, settings).inspect() == ({"items", "alembic_version"}, ["0001"])
    assert "items" not in target.inspect()[0]


def test_without_alembic_one_line_says_what_to_install(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "alembic"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'alembic' (a test shim)\")\n")
    path = tmp_path / "project"
    path.mkdir()
    env = base_env({"DB_TYPE": "sqlite", "DB_NAME": str(tmp_path / "app.db")}, path)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "shim"), env["PYTHONPATH"]])
    project = Project(path, env)
    out = project.db("migrate", "current", expect=1)
    assert out == 'db migrate: alembic is not installed: pip install "db-core[migrations]"\n'
    # db check needs no alembic, nor does importing db_core (and db_core.migrations) load it.
    assert "round trip" in project.db("check")
    probe = "import sys, db_core.cli, db_core.migrations; print(sorted(m for m in sys.modules if 'alembic' in m))"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


# --- await upgrade("head") in a real uvicorn's lifespan ------------------------------------------------------------


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """alembic.ini and a migrations directory from db_core's template, with one hand-written revision."""
    init(tmp_path / "migrations", config=tmp_path / "alembic.ini")
    (tmp_path / "migrations" / "versions" / "0001_create_items.py").write_text(FIRST_MIGRATION)
    return tmp_path / "alembic.ini"


def test_upgrade_in_a_uvicorn_lifespan(target: Target, migrations_dir: Path) -> None:
    @asynccontextmanager
    async def migrate(app: FastAPI) -> AsyncIterator[None]:
        await upgrade("head", config=migrations_dir)
        app.state.checked_out = get_engine().pool.checkedout()
        yield

    app = FastAPI(lifespan=db_lifespan(migrate))

    @app.get("/items")
    async def items() -> dict[str, Any]:
        async with UnitOfWork() as session:
            await session.execute(sa.text("INSERT INTO items (name) VALUES ('ada')"))
        async with UnitOfWork() as session:
            names = list((await session.execute(sa.text("SELECT name FROM items"))).scalars())
        return {"names": names, "checked_out": get_engine().pool.checkedout()}

    configure(target.settings)
    try:
        with running_uvicorn(app) as base_url, httpx2.Client(base_url=base_url, timeout=10) as client:
            response = client.get("/items")
            assert response.status_code == 200, response.text
            assert response.json() == {"names": ["ada"], "checked_out": 0}
            assert app.state.checked_out == 0
    finally:
        configure(None)
    assert target.inspect() == ({"items", "alembic_version"}, ["0001"])


# --- the README's Migrations section, as written -------------------------------------------------------------------

README_MODELS = """\
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
"""


def readme_blocks() -> list[tuple[str, str]]:
    """The fenced blocks of the README's Migrations section: (language, text), in order."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Migrations\n(.*?)^## ", readme, re.DOTALL | re.MULTILINE)
    assert section, "README.md has no Migrations section"
    return re.findall(r"^```(\w+)\n(.*?)^```", section[1], re.DOTALL | re.MULTILINE)


def test_the_readme_migrations_section_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shell lines run in a project (our `myapp.models`), env.py's lines replace its placeholder, files are written."""
    path = tmp_path / "project"
    (path / "myapp").mkdir(parents=True)
    (path / "myapp" / "__init__.py").write_text("")
    (path / "myapp" / "models.py").write_text(README_MODELS)
    database = tmp_path / "app.db"
    target = {"DB_TYPE": "sqlite", "DB_NAME": str(database)}
    # No PYTHONPATH: alembic.ini's prepend_sys_path puts the working directory on sys.path for env.py.
    env = base_env(target, None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    project = Project(path, env)
    blocks = readme_blocks()
    assert [language for language, _ in blocks] == ["sh", "python", "sh", "python"], blocks
    ran: list[str] = []
    for language, text in blocks:
        lines = text.splitlines()
        if language == "sh":
            for line in lines:
                if line.startswith("pip install"):
                    assert line.split("#")[0].strip() == 'pip install "db-core[migrations]"'
                    pyproject = (ROOT / "packages" / "db-core" / "pyproject.toml").read_text()
                    assert re.search(r'^migrations = \["alembic>=', pyproject, re.MULTILINE)
                    continue
                result = subprocess.run(
                    ["bash", "-c", line], env=env, cwd=path, capture_output=True, text=True, timeout=COMMAND_SECONDS
                )
                project.outputs += [(f"{line}: stdout", result.stdout), (f"{line}: stderr", result.stderr)]
                assert result.returncode == 0, f"{line}: exit {result.returncode}\n{result.stdout}{result.stderr}"
                ran.append(line.split("#")[0].strip())
        elif lines[0].startswith("# ") and "/" in lines[0]:
            file = path / lines[0][2:].strip()
            file.write_text(text)
        else:  # the lines that replace env.py's placeholder
            env_py = path / "migrations" / "env.py"
            assert "\ntarget_metadata = None\n" in env_py.read_text()
            env_py.write_text(env_py.read_text().replace("\ntarget_metadata = None\n", f"\n{text}"))
    assert ran[0] == "db migrate init"
    assert ran[-1] == "db migrate downgrade -1"
    assert "create_table('users'" in revision_file(project, "create_users").replace('"', "'")
    settings = DatabaseSettings(type="sqlite", name=str(database), _env_file=None)
    assert Target("sqlite", target, settings).inspect() == ({"alembic_version"}, [])

    # The application of the README, in a real uvicorn, from the project directory.
    monkeypatch.chdir(path)
    monkeypatch.syspath_prepend(str(path))
    for key, value in target.items():
        monkeypatch.setenv(key, value)
    try:
        app = importlib.import_module("myapp.main").app

        @app.get("/users")
        async def users() -> dict[str, Any]:
            async with UnitOfWork() as session:
                count = (await session.execute(sa.text("SELECT count(*) FROM users"))).scalar()
            return {"count": count, "checked_out": get_engine().pool.checkedout()}

        with running_uvicorn(app) as base_url, httpx2.Client(base_url=base_url, timeout=10) as client:
            response = client.get("/users")
            assert response.status_code == 200, response.text
            assert response.json() == {"count": 0, "checked_out": 0}
    finally:
        for name in [name for name in sys.modules if name == "myapp" or name.startswith("myapp.")]:
            del sys.modules[name]
        run_coroutine(dispose_engine())
        configure(None)
    tables, versions = Target("sqlite", target, settings).inspect()
    assert tables == {"users", "alembic_version"}
    assert len(versions) == 1
    project.assert_no_secret()
