"""The distributions as users get them: wheels built by ``hatch build``, installed into clean virtual environments.

Nothing here is mocked. Once per session the five distributions and the two
test connectors in ``tests/plugins`` are built with ``hatch build -t wheel``,
and one fresh venv gets ``db-core[sqlite]`` from those wheels. Each test then
asks for the set of test connectors it needs (:meth:`Venv.use`), which
installs or uninstalls them in that same venv, so the tests do not depend on
their order. Sibling distributions are always passed to pip as wheel files:
the package index has an unrelated project also called ``db-mysql``.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dbtests.servers import Server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PLUGINS_DIR = Path(__file__).resolve().parent / "plugins"

BUILD_TIMEOUT = 300
PIP_TIMEOUT = 600
COMMAND_TIMEOUT = 90


@dataclass(frozen=True)
class Dist:
    """A distribution this module builds."""

    name: str
    module: str
    project_dir: Path
    connectors: dict[str, str] = field(default_factory=dict)
    """Its ``db_core.connectors`` entry points, name to ``module:Class``."""


FIRST_PARTY = {
    d.name: d
    for d in (
        Dist("db-core", "db_core", ROOT / "packages" / "db-core"),
        Dist(
            "db-postgres",
            "db_postgres",
            ROOT / "packages" / "db-postgres",
            {"postgres": "db_postgres:PostgresConnector"},
        ),
        Dist("db-mysql", "db_mysql", ROOT / "packages" / "db-mysql", {"mysql": "db_mysql:MySQLConnector"}),
        Dist("db-sqlite", "db_sqlite", ROOT / "packages" / "db-sqlite", {"sqlite": "db_sqlite:SQLiteConnector"}),
        Dist("db-fastapi", "db_fastapi", ROOT / "packages" / "db-fastapi"),
        Dist("db-pytest", "db_pytest", ROOT / "packages" / "db-pytest"),
    )
}
DUMMY = Dist(
    "db-dummy-connector",
    "db_dummy_connector",
    PLUGINS_DIR / "db-dummy-connector",
    {"dummy": "db_dummy_connector:DummyConnector"},
)
BROKEN = Dist(
    "db-broken-connector",
    "db_broken_connector",
    PLUGINS_DIR / "db-broken-connector",
    {"broken": "db_broken_connector:BrokenConnector"},
)
TEST_PLUGINS = {d.name: d for d in (DUMMY, BROKEN)}
# The example third-party connector, built and tested here as its author's CI would.
EXAMPLE = Dist(
    "db-psycopg",
    "db_psycopg",
    ROOT / "examples" / "db-psycopg",
    {"psycopg": "db_psycopg:PsycopgConnector"},
)
ALL_DISTS = {**FIRST_PARTY, **TEST_PLUGINS, EXAMPLE.name: EXAMPLE}

# Variables of the developer's shell or of `hatch run` that must not reach the clean venv.
_LEAKY = {
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONSAFEPATH",
    "HATCH_ENV_ACTIVE",
    "CONDA_PREFIX",
}


def clean_env(**values: str) -> dict[str, str]:
    """The environment without any ``DB_*`` setting or active virtualenv, plus ``values``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _LEAKY and not key.upper().startswith("DB_") and key.upper() != "DATABASE_URL"
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(values)
    return env


def run(
    args: list[str | Path], *, cwd: Path, timeout: float = COMMAND_TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in :func:`clean_env` plus ``env``, bounded by ``timeout``."""
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def show(result: subprocess.CompletedProcess[str]) -> str:
    """The command, its exit status and its output, for assertion messages."""
    return (
        f"$ {' '.join(result.args)}\nexit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def hatch_executable() -> Path:
    """The hatch that ``./hatchw`` installed, else the one on PATH."""
    local = ROOT / ".hatch" / "bin" / "hatch"
    if local.is_file():
        return local
    found = shutil.which("hatch")
    if found is None:
        pytest.fail("hatch is not installed: run the tests through ./hatchw, which installs it into .hatch/")
    return Path(found)


def about_version(dist: Dist) -> str:
    if dist.name in TEST_PLUGINS:
        pyproject = (dist.project_dir / "pyproject.toml").read_text(encoding="utf-8")
        match = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    else:
        about = (dist.project_dir / "src" / dist.module / "__about__.py").read_text(encoding="utf-8")
        match = re.search(r'^__version__ = "([^"]+)"', about, re.MULTILINE)
    assert match, f"no version found for {dist.name}"
    return match.group(1)


# -- building ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every distribution of :data:`ALL_DISTS` built by ``hatch build -t wheel``, by distribution name."""
    hatch = hatch_executable()
    out = tmp_path_factory.mktemp("wheels")
    built: dict[str, Path] = {}
    for dist in ALL_DISTS.values():
        target = out / dist.name
        result = run([hatch, "build", "-t", "wheel", target], cwd=dist.project_dir, timeout=BUILD_TIMEOUT)
        assert result.returncode == 0, show(result)
        found = sorted(target.glob("*.whl"))
        assert len(found) == 1, f"hatch build for {dist.name} made {found}\n{show(result)}"
        built[dist.name] = found[0]
    return built


# -- the virtual environment ------------------------------------------------------------------------------------------


@dataclass
class Venv:
    """A clean virtual environment with ``db-core[sqlite]`` from the built wheels."""

    path: Path
    wheels: dict[str, Path]
    work: Path
    """A directory outside the repository (no ``.env``) to run commands in."""
    plugins: set[str] = field(default_factory=set)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def db(self) -> Path:
        return self.path / "bin" / "db"

    def pip(self, *args: str | Path) -> None:
        result = run(
            [self.python, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"],
            cwd=self.work,
            timeout=PIP_TIMEOUT,
        )
        assert result.returncode == 0, show(result)

    def use(self, *plugins: str) -> None:
        """Have exactly the test connectors ``plugins`` installed (others are uninstalled)."""
        wanted = set(plugins)
        extra = self.plugins - wanted
        if extra:
            self.pip("uninstall", "-y", *sorted(extra))
        missing = wanted - self.plugins
        if missing:
            # db-core's wheel is passed too, so pip never looks a sibling up by name on the index.
            self.pip("install", self.wheels["db-core"], *(self.wheels[name] for name in sorted(missing)))
        self.plugins = wanted

    def db_cmd(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([self.db, *args], cwd=self.work, env=env)

    def module_cmd(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([self.python, "-m", "db_core", *args], cwd=self.work, env=env)

    def script(self, code: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([self.python, "-c", textwrap.dedent(code)], cwd=self.work, env=env)

    def backends(self) -> dict[str, tuple[str, str, str, str]]:
        """``db backends`` as name to (aliases, distribution, class, status); fails unless it exits 0 cleanly."""
        result = self.db_cmd("backends")
        assert result.returncode == 0, show(result)
        assert "Traceback" not in result.stderr, show(result)
        return parse_backends(result.stdout)


def parse_backends(stdout: str) -> dict[str, tuple[str, str, str, str]]:
    """Rows of the ``db backends`` table: name to (aliases, distribution, class, status)."""
    lines = stdout.strip().splitlines()
    assert lines, "db backends printed nothing"
    assert lines[0].split() == ["NAME", "ALIASES", "DISTRIBUTION", "CLASS", "STATUS"], stdout
    rows = {}
    for line in lines[1:]:
        # Columns are padded to their widest cell and separated by at least two spaces.
        cells = re.split(r"\s{2,}", line.strip(), maxsplit=4)
        assert len(cells) == 5, f"unexpected row {line!r} in:\n{stdout}"
        rows[cells[0]] = (cells[1], cells[2], cells[3], cells[4])
    return rows


@pytest.fixture(scope="session")
def venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    path = tmp_path_factory.mktemp("venv") / "env"
    work = tmp_path_factory.mktemp("work")
    result = run([sys.executable, "-m", "venv", path], cwd=work, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, show(result)
    env = Venv(path, wheels, work)
    env.pip("install", f"{wheels['db-core']}[sqlite]", wheels["db-sqlite"])
    yield env
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(venv: Venv, tmp_path: Path) -> Path:
    """A fresh directory for this test's SQLite files, also the commands' working directory."""
    venv.work = tmp_path
    return tmp_path


# -- 1. the wheels ----------------------------------------------------------------------------------------------------


def wheel_metadata(wheel: Path, dist: Dist) -> tuple[set[str], email.message.Message, configparser.ConfigParser]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"{dist.module}-{about_version(dist)}.dist-info"
        metadata = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        entry_points = configparser.ConfigParser(delimiters=("=",))
        entry_points.optionxform = str  # type: ignore[assignment,method-assign]
        if f"{info}/entry_points.txt" in names:
            entry_points.read_string(zf.read(f"{info}/entry_points.txt").decode())
    return names, metadata, entry_points


def requirements(metadata: email.message.Message) -> list[Requirement]:
    return [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]


@pytest.mark.parametrize("name", list(ALL_DISTS))
def test_wheel_contents(wheels: dict[str, Path], name: str) -> None:
    dist = ALL_DISTS[name]
    version = about_version(dist)
    wheel = wheels[name]
    assert wheel.name == f"{dist.module}-{version}-py3-none-any.whl"
    names, metadata, entry_points = wheel_metadata(wheel, dist)

    assert metadata["Name"] == name
    assert metadata["Version"] == version
    assert metadata["Requires-Python"] == ">=3.11"
    # Only the package and its metadata: no src/ prefix, no tests, no stray files.
    assert {n.split("/")[0] for n in names} == {dist.module, f"{dist.module}-{version}.dist-info"}, sorted(names)
    assert f"{dist.module}/__init__.py" in names
    if name in FIRST_PARTY or name in (DUMMY.name, EXAMPLE.name):
        assert f"{dist.module}/py.typed" in names, "PEP 561 marker missing"
    if name in FIRST_PARTY or name == EXAMPLE.name:
        assert f"{dist.module}/__about__.py" in names

    groups = set(entry_points.sections())
    if name == "db-pytest":
        assert dict(entry_points["pytest11"]) == {"db_pytest": "db_pytest.plugin"}
    else:
        # The conformance kit is imported by the tests that use it, never loaded into every pytest run.
        assert "pytest11" not in groups
    if dist.connectors:
        assert dict(entry_points["db_core.connectors"]) == dist.connectors
        assert {r.name for r in requirements(metadata)} >= {"db-core"}
        # Each entry point names a class the wheel's module really defines.
        with zipfile.ZipFile(wheel) as zf:
            tree = ast.parse(zf.read(f"{dist.module}/__init__.py"))
        classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        if name != BROKEN.name:
            assert {target.split(":")[1] for target in dist.connectors.values()} <= classes
    else:
        assert "db_core.connectors" not in groups
    if name == "db-core":
        assert dict(entry_points["console_scripts"]) == {"db": "db_core.cli:main"}
        assert "db_core/__main__.py" in names
        # The conformance kit's data file travels with it.
        assert "db_core/testing/unrelated-ca.pem" in names
        # So does db migrate init's template, which is not Python.
        for template in ("env.py", "script.py.mako", "README"):
            assert f"db_core/migration_template/{template}" in names
        assert "migrations" in (metadata.get_all("Provides-Extra") or [])
    else:
        assert "console_scripts" not in groups


def test_dummy_connector_depends_only_on_db_core(wheels: dict[str, Path]) -> None:
    _names, metadata, _eps = wheel_metadata(wheels[DUMMY.name], DUMMY)
    assert {r.name for r in requirements(metadata)} == {"db-core", "aiosqlite"}
    with zipfile.ZipFile(wheels[DUMMY.name]) as zf:
        source = zf.read("db_dummy_connector/__init__.py").decode()
    assert "db_sqlite" not in source


# -- 2. db-core[sqlite] in a clean venv -------------------------------------------------------------------------------


def test_siblings_come_from_the_built_wheels(venv: Venv, workdir: Path) -> None:
    venv.use()
    result = venv.script(
        """
        import json
        from importlib.metadata import PackageNotFoundError, distribution
        found = {}
        for name in ("db-core", "db-sqlite", "db-postgres", "db-mysql", "db-fastapi", "db-pytest"):
            try:
                dist = distribution(name)
            except PackageNotFoundError:
                continue
            found[name] = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        print(json.dumps(found))
        """
    )
    assert result.returncode == 0, show(result)
    found = json.loads(result.stdout)
    assert set(found) == {"db-core", "db-sqlite"}
    assert found["db-core"] == venv.wheels["db-core"].as_uri()
    assert found["db-sqlite"] == venv.wheels["db-sqlite"].as_uri()


def test_check_sqlite(venv: Venv, workdir: Path) -> None:
    venv.use()
    result = venv.db_cmd("check", DB_TYPE="sqlite", DB_NAME=str(workdir / "x.db"))
    assert result.returncode == 0, show(result)
    assert re.search(r"^connector:\s+sqlite \(db_sqlite\.SQLiteConnector\)$", result.stdout, re.MULTILINE), show(result)
    assert re.search(r"^server:\s+sqlite \d+\.\d+\.\d+$", result.stdout, re.MULTILINE), show(result)
    assert re.search(r"^round trip:\s+\d+\.\d+ ms$", result.stdout, re.MULTILINE), show(result)
    assert (workdir / "x.db").exists()


def test_backends_lists_only_sqlite(venv: Venv, workdir: Path) -> None:
    venv.use()
    rows = venv.backends()
    assert list(rows) == ["sqlite"]
    assert rows["sqlite"] == ("sqlite3", "db-sqlite 0.1.0", "db_sqlite:SQLiteConnector", "ok")


@pytest.mark.parametrize(
    ("db_type", "extra"), [("postgres", "postgres"), ("postgresql", "postgres"), ("mysql", "mysql")]
)
def test_check_missing_backend_says_how_to_install_it(venv: Venv, workdir: Path, db_type: str, extra: str) -> None:
    venv.use()
    result = venv.db_cmd("check", DB_TYPE=db_type)
    assert result.returncode != 0, show(result)
    assert "Traceback" not in result.stderr, show(result)
    assert result.stdout == "", show(result)
    assert "installed: sqlite)" in result.stderr, show(result)
    assert f'pip install "db-core[{extra}]"' in result.stderr, show(result)
    assert len(result.stderr.strip().splitlines()) == 1, show(result)


def test_the_pytest_plugin_is_there_only_once_installed(venv: Venv, workdir: Path) -> None:
    """db-core alone adds nothing to a project's pytest run; db-pytest adds its documented fixtures."""
    venv.use()
    (workdir / "test_unrelated.py").write_text("def test_nothing():\n    pass\n", encoding="utf-8")
    venv.pip("install", "pytest>=8.2")

    def fixtures() -> str:
        result = run([venv.python, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"], cwd=workdir)
        assert result.returncode == 0, show(result)
        return result.stdout

    assert "db_" not in fixtures()
    assert "db_pytest" not in run([venv.python, "-m", "pytest", "--version", "--version"], cwd=workdir).stdout
    venv.pip("install", venv.wheels["db-core"], venv.wheels["db-pytest"])
    try:
        listed = fixtures()
        for fixture, words in {
            "db_session": "rolled back after the test",
            "db_setup": "once per run",
            "db_engine": "test database's engine",
            "db_app": "dependency_overrides",
            "db_settings": "test_<name>",
        }.items():
            assert re.search(rf"^{fixture} \[\w+ scope\]|^{fixture}\b", listed, re.MULTILINE), listed
            assert words in listed, f"{fixture}: {words!r} not in\n{listed}"
        # Nothing was created by listing: the plugin only makes a database when a test asks.
        assert sorted(p.name for p in workdir.iterdir()) == ["test_unrelated.py"]
    finally:
        venv.pip("uninstall", "-y", "db-pytest")


# -- 3. a third-party connector ---------------------------------------------------------------------------------------


def test_backends_lists_third_party_connector(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name)
    rows = venv.backends()
    assert list(rows) == ["dummy", "sqlite"]
    assert rows["dummy"] == ("-", "db-dummy-connector 0.3.1", "db_dummy_connector:DummyConnector", "ok")


def test_check_third_party_connector(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name)
    result = venv.db_cmd("check", DB_TYPE="dummy", DB_NAME=str(workdir / "d.db"))
    assert result.returncode == 0, show(result)
    assert re.search(r"^connector:\s+dummy \(db_dummy_connector\.DummyConnector\)$", result.stdout, re.MULTILINE)
    assert f"sqlite+aiosqlite:///{workdir / 'd.db'}" in result.stdout
    assert re.search(r"^server:\s+sqlite \d+\.\d+\.\d+$", result.stdout, re.MULTILINE), show(result)
    assert (workdir / "d.db").exists()


def test_check_third_party_connector_default_database(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name)
    result = venv.db_cmd("check", DB_TYPE="DUMMY")
    assert result.returncode == 0, show(result)
    assert (workdir / "dummy.db").exists(), "default_database is a file in the working directory"


UNIT_OF_WORK_SCRIPT = """
import asyncio, json, sys
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from db_core import UnitOfWork, dispose_engine, get_connector_instance, get_engine

class Base(DeclarativeBase):
    pass

class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))

async def main():
    async with get_engine().begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with UnitOfWork() as session:
        session.add_all([Item(name="ada"), Item(name="grace")])
    try:
        async with UnitOfWork() as session:
            session.add(Item(name="rolled back"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    async with UnitOfWork() as session:
        names = list((await session.execute(select(Item.name).order_by(Item.id))).scalars())
    connector = type(get_connector_instance())
    await dispose_engine()
    return {
        "names": names,
        "connector": f"{connector.__module__}.{connector.__qualname__}",
        "db_sqlite_imported": "db_sqlite" in sys.modules,
    }

print(json.dumps(asyncio.run(main())))
"""


def test_unit_of_work_through_third_party_connector(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name)
    result = venv.script(UNIT_OF_WORK_SCRIPT, DB_TYPE="dummy", DB_NAME=str(workdir / "uow.db"))
    assert result.returncode == 0, show(result)
    assert json.loads(result.stdout) == {
        "names": ["ada", "grace"],
        "connector": "db_dummy_connector.DummyConnector",
        "db_sqlite_imported": False,
    }
    assert (workdir / "uow.db").exists()


# -- 4. a connector that fails to import ------------------------------------------------------------------------------


def test_check_broken_connector_names_its_distribution(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name, BROKEN.name)
    result = venv.db_cmd("check", DB_TYPE="broken")
    assert result.returncode != 0, show(result)
    assert "Traceback" not in result.stderr, show(result)
    assert result.stdout == "", show(result)
    assert "db-broken-connector 0.0.7" in result.stderr, show(result)
    assert "could not be loaded" in result.stderr, show(result)
    assert "ImportError: db_broken_connector needs the driver 'nosuchdriver'" in result.stderr, show(result)


def test_backends_shows_broken_connector_and_listing_imports_none(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name, BROKEN.name)
    rows = venv.backends()
    assert list(rows) == ["broken", "dummy", "sqlite"]
    assert rows["broken"] == (
        "-",
        "db-broken-connector 0.0.7",
        "db_broken_connector:BrokenConnector",
        "broken: ImportError: db_broken_connector needs the driver 'nosuchdriver', which is not installed",
    )
    assert rows["dummy"][3] == rows["sqlite"][3] == "ok"
    result = venv.script(
        """
        import json, sys
        from db_core import ConnectorLoadError, available_connectors, resolve_connector
        names = [info.name for info in available_connectors()]
        imported = sorted(m for m in ("db_sqlite", "db_dummy_connector", "db_broken_connector") if m in sys.modules)
        try:
            resolve_connector("broken")
        except ConnectorLoadError as exc:
            error = {"distribution": exc.distribution, "is_import_error": isinstance(exc, ImportError)}
        print(json.dumps({"names": names, "imported": imported, "error": error}))
        """
    )
    assert result.returncode == 0, show(result)
    assert json.loads(result.stdout) == {
        "names": ["broken", "dummy", "sqlite"],
        "imported": [],
        "error": {"distribution": "db-broken-connector 0.0.7", "is_import_error": True},
    }


def test_broken_connector_does_not_break_the_others(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name, BROKEN.name)
    for db_type in ("sqlite", "dummy"):
        result = venv.db_cmd("check", DB_TYPE=db_type, DB_NAME=str(workdir / f"{db_type}.db"))
        assert result.returncode == 0, show(result)


# -- 5. python -m db_core ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plugins", [(), (DUMMY.name, BROKEN.name)], ids=["sqlite-only", "with-plugins"])
def test_python_m_db_core_matches_db(venv: Venv, workdir: Path, plugins: tuple[str, ...]) -> None:
    venv.use(*plugins)
    for args, env in [
        (["backends"], {}),
        (["--version"], {}),
        (["check"], {"DB_TYPE": "postgres"}),
        (["check"], {"DB_TYPE": "broken"}),
    ]:
        script, module = venv.db_cmd(*args, **env), venv.module_cmd(*args, **env)
        assert (module.returncode, module.stdout, module.stderr) == (script.returncode, script.stdout, script.stderr), (
            f"{show(script)}\n\n{show(module)}"
        )
    assert venv.module_cmd("--version").stdout.strip() == "db-core 0.1.0"
    result = venv.module_cmd("check", DB_TYPE="sqlite", DB_NAME=str(workdir / "m.db"))
    assert result.returncode == 0, show(result)
    assert re.search(r"^server:\s+sqlite \d+\.\d+\.\d+$", result.stdout, re.MULTILINE), show(result)


# -- the table itself -------------------------------------------------------------------------------------------------


def test_backends_columns_are_separated(venv: Venv, workdir: Path) -> None:
    venv.use(DUMMY.name)
    result = venv.db_cmd("backends")
    assert result.returncode == 0, show(result)
    for line in result.stdout.strip().splitlines():
        assert len(re.split(r"\s{2,}", line.strip())) == 5, f"{line!r} in:\n{result.stdout}"


# -- 6. the example third-party connector, as its author's CI runs it -------------------------------------------------


def test_example_connector_passes_the_conformance_kit_from_its_wheel(
    wheels: dict[str, Path], postgres_server: Server, tmp_path: Path
) -> None:
    """examples/db-psycopg: its wheel and db-core[testing]'s in a clean venv, its tests run from its own folder."""
    env_dir = tmp_path / "env"
    result = run([sys.executable, "-m", "venv", env_dir], cwd=tmp_path, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, show(result)
    python = env_dir / "bin" / "python"
    install = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    result = run([*install, f"{wheels['db-core']}[testing]", wheels[EXAMPLE.name]], cwd=tmp_path, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, show(result)
    # The project as its author has it, less src/: the tests must use the installed wheel.
    project = tmp_path / "db-psycopg"
    shutil.copytree(EXAMPLE.project_dir, project, ignore=shutil.ignore_patterns("src", "__pycache__", ".*"))
    server = {
        "CI": "true",
        "DB_TYPE": "psycopg",
        "DB_HOST": postgres_server.host,
        "DB_PORT": str(postgres_server.port),
        "DB_USER": postgres_server.user,
        "DB_PASSWORD": postgres_server.password or "kit-S3cret-pw",
        "DB_NAME": postgres_server.database,
    }
    result = run([python, "-m", "pytest", "-p", "no:cacheprovider"], cwd=project, env=server, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, show(result)
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary), show(result)
    assert "skipped" not in summary, show(result)
    assert "TestPsycopgConformance" in result.stdout or "test_conformance.py" in result.stdout, show(result)
    backends = parse_backends(run([env_dir / "bin" / "db", "backends"], cwd=tmp_path).stdout)
    assert backends["psycopg"][1:] == ("db-psycopg 0.1.0", "db_psycopg:PsycopgConnector", "ok")
