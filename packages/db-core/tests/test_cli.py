"""The ``db`` command, run as ``python -m db_core`` in a subprocess with ``DB_*`` variables.

Every run has a subprocess timeout: that is a hang guard (a connection
attempt must give up by itself), not a performance assertion.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from dbtests.dists import SitePackages

pytest_plugins = ["dbtests.dists"]

HANG_GUARD_SECONDS = 15
UNREACHABLE_PORT = 1


def db(
    *args: str, env: dict[str, str] | None = None, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m db_core ARGS`` with only ``env`` as its ``DB_*`` variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_") and k.upper() != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "db_core", *args],
        env=full_env,
        cwd=cwd,  # a fresh directory: no .env is read
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def server_env(server: Any, **extra: str) -> dict[str, str]:
    return {
        "DB_TYPE": server.backend,
        "DB_HOST": server.host,
        "DB_PORT": str(server.port),
        "DB_USER": server.user,
        "DB_PASSWORD": server.password,
        "DB_NAME": server.database,
        **extra,
    }


def assert_one_line_connect_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("db check: cannot connect to"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# --- db backends ----------------------------------------------------------------------------------


def test_backends_lists_the_first_party_connectors(tmp_path: Path) -> None:
    result = db("backends", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ALIASES", "DISTRIBUTION", "CLASS", "STATUS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    expected = {
        "postgres": ("db-postgres", "db_postgres:PostgresConnector"),
        "mysql": ("db-mysql", "db_mysql:MySQLConnector"),
        "sqlite": ("db-sqlite", "db_sqlite:SQLiteConnector"),
    }
    for name, (distribution, target) in expected.items():
        assert name in rows, f"{name} missing from db backends:\n{result.stdout}"
        assert f"{distribution} {version(distribution)}" in rows[name], rows[name]
        assert re.split(r"\s{2,}", rows[name].strip())[3:] == [target, "ok"], rows[name]
    assert "postgresql" in rows["postgres"]
    assert "pg" in rows["postgres"]
    assert "mariadb" in rows["mysql"]


def test_backends_reports_broken_and_ambiguous_connectors_and_succeeds(
    site_packages: SitePackages, tmp_path: Path
) -> None:
    site_packages.install(
        "db-fragile-connector",
        "0.2.0",
        {"fragile": "db_fragile:Connector"},
        {"db_fragile": "raise RuntimeError('the driver wants libfoo.so.3')"},
    )
    for dist in ("db-twin-a", "db-twin-b"):
        module = dist.replace("-", "_").removeprefix("db_")
        source = "from db_core import DBConnector\nclass Connector(DBConnector):\n    name = 'twin'\n"
        site_packages.install(dist, "1.0", {"twin": f"{module}:Connector"}, {module: source})
    result = db("backends", cwd=tmp_path, env={"PYTHONPATH": str(site_packages.path)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()[1:]]
    status = {(row[0], row[2].split()[0]): row[4] for row in rows}
    assert status["fragile", "db-fragile-connector"] == "broken: RuntimeError: the driver wants libfoo.so.3"
    assert status["twin", "db-twin-a"] == "ambiguous: DB_TYPE=twin is also claimed by db-twin-b 1.0"
    assert status["twin", "db-twin-b"] == "ambiguous: DB_TYPE=twin is also claimed by db-twin-a 1.0"
    assert status["sqlite", "db-sqlite"] == "ok"


def test_version(tmp_path: Path) -> None:
    result = db("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"db-core {version('db-core')}"


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = db(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: db" in result.stderr


# --- db check: success ----------------------------------------------------------------------------


def assert_check_succeeded(result: subprocess.CompletedProcess[str], backend: str) -> dict[str, str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr == ""
    fields = dict(re.findall(r"^([a-z ]+):\s+(.*)$", result.stdout, re.MULTILINE))
    assert set(fields) >= {"connector", "url", "server", "round trip"}, result.stdout
    assert fields["server"].split()[0] == backend, fields["server"]
    assert re.fullmatch(r"\S+ \d+(\.\d+)+", fields["server"]), fields["server"]
    assert re.fullmatch(r"\d+\.\d\d ms", fields["round trip"]), fields["round trip"]
    return fields


def test_check_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    result = db("check", env={"DB_TYPE": "sqlite", "DB_NAME": str(path)}, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    fields = assert_check_succeeded(result, "sqlite")
    assert fields["url"] == f"sqlite+aiosqlite:///{path}"
    assert fields["connector"].startswith("sqlite (db_sqlite.SQLiteConnector)")


def test_check_postgres(postgres_server: Any, tmp_path: Path) -> None:
    result = db("check", env=server_env(postgres_server), cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    fields = assert_check_succeeded(result, "postgresql")
    assert fields["url"].startswith("postgresql+asyncpg://")
    assert fields["url"].endswith(f"@{postgres_server.host}:{postgres_server.port}/{postgres_server.database}")


def test_check_mysql(mysql_server: Any, tmp_path: Path) -> None:
    result = db("check", env=server_env(mysql_server), cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    fields = assert_check_succeeded(result, "mysql")
    assert fields["url"].startswith("mysql+aiomysql://")


def test_check_reads_db_url(postgres_server: Any, tmp_path: Path) -> None:
    s = postgres_server
    url = f"postgresql://{s.user}@{s.host}:{s.port}/{s.database}"
    result = db("check", env={"DB_URL": url}, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert_check_succeeded(result, "postgresql")


# --- db check: cannot connect ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_check_unreachable_port(backend: str, tmp_path: Path) -> None:
    env = {
        "DB_TYPE": backend,
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(UNREACHABLE_PORT),
        "DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    result = db("check", env=env, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert_one_line_connect_error(result)
    assert f"127.0.0.1:{UNREACHABLE_PORT}" in result.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (in the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_check_silent_server_times_out(backend: str, silent_server: int, tmp_path: Path) -> None:
    """The server takes the connection and never answers: DB_CONNECT_TIMEOUT_SECONDS still ends it."""
    env = {
        "DB_TYPE": backend,
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(silent_server),
        "DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    # db check's own guard is 2 * timeout + 5 s; the subprocess timeout is only the hang guard.
    result = db("check", env=env, cwd=tmp_path, timeout=30)
    assert_one_line_connect_error(result)
    # The connector's own message, naming the setting.
    assert "server" in result.stderr, result.stderr
    assert "within DB_CONNECT_TIMEOUT_SECONDS=2" in result.stderr, result.stderr


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_connect_timeout_bounds_a_silent_server_in_process(backend: str, silent_server: int) -> None:
    """Without the CLI's own guard: DB_CONNECT_TIMEOUT_SECONDS alone must end the attempt on a silent server.

    ``db check`` wraps ``ping()`` in ``wait_for(2 * timeout + 5)``; applications
    calling ``ping()`` or ``UnitOfWork()`` have no such guard, so the driver's
    connect timeout has to cover the whole handshake, not just the TCP connect.
    """
    from db_core import DatabaseSettings, configure, dispose_engine, ping

    timeout = 1.0
    guard = 8.0  # the hang guard of this test
    configure(
        DatabaseSettings(
            type=backend, host="127.0.0.1", port=silent_server, connect_timeout_seconds=timeout, _env_file=None
        )
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(Exception) as info:  # noqa: PT011 - whatever the driver raises
            await asyncio.wait_for(ping(), guard)
    finally:
        await dispose_engine()
        configure(None)
    elapsed = loop.time() - started
    assert elapsed < guard - 0.5, (
        f"BUG: on {backend}, connecting to a server that accepts the TCP connection but never answers "
        f"ignored DB_CONNECT_TIMEOUT_SECONDS={timeout:g}: still waiting after {elapsed:.1f}s, ended only by "
        f"this test's {guard:g}s guard ({type(info.value).__name__}). Applications would hang forever."
    )


def test_check_wrong_database_name(postgres_server: Any, tmp_path: Path) -> None:
    env = server_env(postgres_server, DB_NAME="db_test_no_such_database", DB_CONNECT_TIMEOUT_SECONDS="2")
    result = db("check", env=env, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert_one_line_connect_error(result)
    assert "db_test_no_such_database" in result.stderr


def test_check_sqlite_unopenable_file(tmp_path: Path) -> None:
    env = {"DB_TYPE": "sqlite", "DB_NAME": str(tmp_path / "no" / "such" / "dir" / "x.db")}
    result = db("check", env=env, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    # A settings problem, though found while connecting: exit 2, naming DB_NAME.
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr.startswith("db check: unable to open database file"), result.stderr
    assert "DB_NAME=" in result.stderr
    # Intermittent (about 1 run in 20 here): aiosqlite's worker thread, stopped without being
    # awaited after the failed connect, calls call_soon_threadsafe on the loop asyncio.run() has
    # already closed, and Python prints that thread's traceback to stderr at exit.
    assert "Traceback" not in result.stderr, (
        "BUG (intermittent): db check printed a worker-thread traceback after the SQLite connect "
        "failure (aiosqlite stop() not awaited, 'Event loop is closed'), breaking the one-line error:\n" + result.stderr
    )
    assert len(result.stderr.splitlines()) == 1, result.stderr


# --- db check: invalid settings (exit 2, before connecting) ---------------------------------------


def test_check_port_out_of_range(tmp_path: Path) -> None:
    result = db("check", env={"DB_TYPE": "postgres", "DB_PORT": "70000"}, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert result.returncode == 2, result
    assert result.stderr.startswith("db check: ")
    assert "DB_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_port_not_a_number(tmp_path: Path) -> None:
    result = db("check", env={"DB_TYPE": "mysql", "DB_PORT": "abc"}, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert result.returncode == 2, result
    assert "DB_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_unknown_backend(tmp_path: Path) -> None:
    result = db("check", env={"DB_TYPE": "oracle"}, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert result.returncode == 2, result
    assert "DB_TYPE='oracle'" in result.stderr
    installed = re.search(r"installed: ([^)]*)\)", result.stderr)
    assert installed is not None, result.stderr
    assert {"mysql", "postgres", "sqlite"} <= set(installed.group(1).split(", ")), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_reads_dotenv_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DB_TYPE=sqlite\nDB_NAME={tmp_path / 'from_env_file.db'}\n")
    result = db("check", cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    fields = assert_check_succeeded(result, "sqlite")
    assert fields["url"].endswith("from_env_file.db")
