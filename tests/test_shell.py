"""``db shell``: the backends' own clients (psql, mariadb, sqlite3), run for real through the ``db`` script.

Each test runs the environment's ``db`` script in a subprocess with only the
``DB_*`` variables of its target, as a user would. While a client runs, its
command line and environment are read from ``/proc``: the password must not
be on the command line, where every user of the machine can read it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dbtests.secrets import PASSWORD, WRONG_PASSWORD, Login, assert_no_secret
from dbtests.servers import Server

pytest_plugins = ["dbtests.secrets"]

DB = Path(sys.executable).parent / "db"
CLIENTS = {"postgres": "psql", "mysql": "mariadb", "sqlite": "sqlite3"}
# Each client's options for one statement, printed bare.
ONE_STATEMENT = {
    "postgres": ["-X", "--no-align", "--tuples-only", "-c"],
    "mysql": ["--batch", "--skip-column-names", "-e"],
    "sqlite": [],
}
SLEEP = {"postgres": "select pg_sleep(2), current_user", "mysql": "select sleep(2), current_user()"}
HANG_GUARD_SECONDS = 30


def db_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """``os.environ`` without the developer's ``DB_*`` variables, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_") and k.upper() != "DATABASE_URL"}
    full.update(env)
    full.update(extra)
    return full


def db_shell(*args: str, env: dict[str, str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``db shell ARGS`` with only ``env`` as its ``DB_*`` variables."""
    return subprocess.run(
        [str(DB), "shell", *args],
        env=db_env(env, **extra),
        cwd=cwd,  # a fresh directory: no .env is read
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
        check=False,
    )


def server_env(server: Server, **extra: str) -> dict[str, str]:
    env = {
        "DB_TYPE": server.backend,
        "DB_HOST": server.host,
        "DB_PORT": str(server.port),
        "DB_USER": server.user,
        "DB_NAME": server.database,
    }
    if server.password:
        env["DB_PASSWORD"] = server.password
    return {**env, **extra}


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """Each backend in turn: its name and the ``DB_*`` variables of this run's database."""
    if request.param == "sqlite":
        return "sqlite", {"DB_TYPE": "sqlite", "DB_NAME": str(tmp_path / "shell.db")}
    server: Server = request.getfixturevalue(f"{request.param}_server")
    return request.param, server_env(server)


def one_statement(backend: str, statement: str) -> list[str]:
    return [*ONE_STATEMENT[backend], statement]


# --- the client runs, with the arguments given, and its exit status is db's --------------------------------


def test_select_one(target: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    backend, env = target
    result = db_shell(*one_statement(backend, "select 1;"), env=env, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "1", "")


def test_failing_statement_gives_the_clients_exit_status(target: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    backend, env = target
    result = db_shell(*one_statement(backend, "select no_such_column;"), env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # psql, mariadb and sqlite3 all exit 1 on a failed statement
    assert "no_such_column" in result.stderr


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_unreachable_database_gives_the_clients_exit_status(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    env = server_env(server, DB_NAME=f"db_test_missing_{uuid.uuid4().hex[:8]}")
    result = db_shell(*one_statement(backend, "select 1"), env=env, cwd=tmp_path)
    # psql: 2 when it cannot connect; mariadb: 1.
    assert result.returncode == (2 if backend == "postgres" else 1), result.stderr
    assert env["DB_NAME"] in result.stderr


def test_sqlite_exit_status_and_arguments_pass_through(tmp_path: Path) -> None:
    env = {"DB_TYPE": "sqlite", "DB_NAME": str(tmp_path / "shell.db")}
    assert db_shell(".exit 3", env=env, cwd=tmp_path).returncode == 3
    # Options after --, and after the statement, go to sqlite3 as they are.
    result = db_shell("--", "-json", "select 1 as one;", env=env, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, '[{"one":1}]'), result.stderr
    result = db_shell("pragma foreign_keys;", env=env, cwd=tmp_path)
    assert result.stdout.strip() == "1", "foreign keys are on, as in the application's connections"


def test_sqlite_named_database_and_odd_file_name(tmp_path: Path) -> None:
    odd = tmp_path / 'it\'s a %20 "db".sqlite'
    with sqlite3.connect(odd) as connection:
        connection.execute("create table t (x)")
        connection.execute("insert into t values (42)")
    connection.close()
    env = {
        "DB_TYPE": "sqlite",
        "DB_NAME": str(tmp_path / "default.db"),
        "DB_DATABASES__OTHER__TYPE": "sqlite",
        "DB_DATABASES__OTHER__NAME": odd.name,  # relative to the working directory
    }
    result = db_shell("--database", "other", "select x from t;", env=env, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "42"), result.stderr
    result = db_shell("--database=other", "--", "select count(*) from t;", env=env, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "1"), result.stderr
    assert not (tmp_path / "default.db").exists()


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_database_name_with_spaces_percent_and_quotes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    name = f'db_test_shell {uuid.uuid4().hex[:8]} %20 it\'s "q" a=b'
    quoted = '"' + name.replace('"', '""') + '"' if backend == "postgres" else f"`{name}`"
    asyncio.run(server.admin(f"CREATE DATABASE {quoted}"))
    try:
        statement = "select current_database()" if backend == "postgres" else "select database()"
        result = db_shell(*one_statement(backend, statement), env=server_env(server, DB_NAME=name), cwd=tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, name), result.stderr
    finally:
        force = " WITH (FORCE)" if backend == "postgres" else ""
        asyncio.run(server.admin(f"DROP DATABASE IF EXISTS {quoted}{force}"))


# --- the password: never on the command line ---------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc/*/stat``)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def running_client(db: subprocess.Popen[str], client: str) -> int:
    """The pid of ``db``'s child once it runs ``client`` (after its exec)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert db.poll() is None, f"db shell ended early: {db.returncode} {db.communicate()}"
        for pid in children(db.pid):
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if Path(os.fsdecode(argv0)).name == client:
                return pid
        time.sleep(0.02)
    raise AssertionError(f"{client} never ran under db shell")


def start_shell(login: Login, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(DB), "shell", *args],
        env=db_env(login.env()),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def client_of(login: Login) -> str:
    return "psql" if login.backend == "postgres" else "mariadb"


def test_password_is_not_on_the_clients_command_line(checked_login: Login, tmp_path: Path) -> None:
    login = checked_login
    db = start_shell(login, *one_statement(login.backend, SLEEP[login.backend]), cwd=tmp_path)
    try:
        pid = running_client(db, client_of(login))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        option_file: Path | None = None
        if login.backend == "mysql":
            first = os.fsdecode(cmdline.split(b"\0")[1])
            assert first.startswith("--defaults-extra-file="), cmdline
            option_file = Path(first.partition("=")[2])
            assert stat.S_IMODE(option_file.stat().st_mode) == 0o600
            assert stat.S_IMODE(option_file.parent.stat().st_mode) == 0o700
            assert option_file.stat().st_uid == os.getuid()
        stdout, stderr = db.communicate(timeout=HANG_GUARD_SECONDS)
    finally:
        if db.poll() is None:
            db.kill()
            db.communicate()
    assert_no_secret(cmdline.decode("utf-8", "surrogateescape"), f"{client_of(login)}'s /proc/PID/cmdline")
    assert b"DB_PASSWORD=" not in environ, "the client gets no DB_* variables"
    if login.backend == "postgres":
        assert b"\0PGPASSWORD=" + PASSWORD.encode() + b"\0" in b"\0" + environ
    else:
        assert_no_secret(environ.decode("utf-8", "surrogateescape"), "mariadb's /proc/PID/environ")
        assert option_file is not None
        assert not option_file.parent.exists(), "the option file and its directory are removed"
    # The server checked the password (scram-sha-256, MariaDB) and let the user in.
    assert db.returncode == 0, stderr
    assert login.user in stdout
    assert_no_secret(stdout, "db shell's stdout")
    assert_no_secret(stderr, "db shell's stderr")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_shell_command_holds_no_password(backend: str) -> None:
    # The MariaDB client overwrites a --password=... argument once it runs, so /proc alone
    # could miss one there: the command the connector makes is checked as well.
    from db_core import DatabaseSettings, get_connector

    settings = DatabaseSettings(type=backend, host="127.0.0.1", password=PASSWORD, user="u", _env_file=None)
    with get_connector(settings).shell(["-c", "select 1"]) as command:
        assert_no_secret("\0".join(command.argv), f"{backend}'s shell command")
        assert command.argv[-2:] == ["-c", "select 1"]
        if backend == "postgres":
            assert command.env["PGPASSWORD"] == PASSWORD
        else:
            assert_no_secret(repr(command.env), "mariadb's environment")
            option_file = Path(command.argv[1].partition("=")[2])
            assert command.argv[1].startswith("--defaults-extra-file=")
            assert option_file.read_text(encoding="utf-8").startswith("[client]\npassword=")
    if backend == "mysql":
        assert not option_file.parent.exists()


def test_tls_settings_reach_the_clients(tmp_path: Path) -> None:
    from db_core import DatabaseSettings, get_connector

    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    tls = {f"ssl_{name}_file": path for name, path in files.items()}
    postgres = DatabaseSettings(
        type="postgres", ssl_mode="verify-full", application_name="app 1", _env_file=None, **tls
    )
    with get_connector(postgres).shell([]) as command:
        assert command.env["PGSSLMODE"] == "verify-full"
        assert command.env["PGAPPNAME"] == "app 1"
        expected = {"PGSSLROOTCERT": "ca", "PGSSLCERT": "cert", "PGSSLKEY": "key"}
        assert {variable: command.env[variable] for variable in expected} == {
            variable: str(files[name]) for variable, name in expected.items()
        }
    mysql = DatabaseSettings(type="mysql", ssl_mode="verify-full", _env_file=None, **tls)
    with get_connector(mysql).shell([]) as command:
        assert {"--ssl", "--ssl-verify-server-cert", f"--ssl-ca={files['ca']}", f"--ssl-key={files['key']}"} <= set(
            command.argv
        )
    with get_connector(DatabaseSettings(type="mysql", ssl_mode="disable", _env_file=None, **tls)).shell([]) as command:
        assert "--skip-ssl" in command.argv
        assert not any(arg.startswith("--ssl-") for arg in command.argv)
    with get_connector(DatabaseSettings(type="sqlite", name=":memory:", _env_file=None)).shell(["-json"]) as command:
        assert command.argv[-2:] == [":memory:", "-json"]


def test_wrong_password_is_refused(checked_login: Login, tmp_path: Path) -> None:
    result = db_shell(
        *one_statement(checked_login.backend, "select 1"),
        env=checked_login.env(),
        cwd=tmp_path,
        DB_PASSWORD=WRONG_PASSWORD,
    )
    assert result.returncode != 0
    assert "password" in result.stderr.lower() or "denied" in result.stderr.lower(), result.stderr


def test_option_file_survives_option_file_syntax(mysql_server: Server, tmp_path: Path) -> None:
    # Quotes, backslashes, comment characters, = and spaces at both ends, each special in an option file.
    password = f" \"q\" \\b \\\\ #c ;d =e 'f' {uuid.uuid4().hex[:6]} "
    name = f"db_test_sh_{uuid.uuid4().hex[:8]}"
    literal = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    asyncio.run(
        mysql_server.admin(
            f"CREATE USER '{name}'@'%' IDENTIFIED BY {literal}",
            f"GRANT ALL PRIVILEGES ON `{mysql_server.database}`.* TO '{name}'@'%'",
        )
    )
    try:
        env = server_env(mysql_server, DB_USER=name, DB_PASSWORD=password)
        result = db_shell(*one_statement("mysql", "select current_user()"), env=env, cwd=tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, f"{name}@%"), result.stderr
    finally:
        asyncio.run(mysql_server.admin(f"DROP USER IF EXISTS '{name}'@'%'"))


def test_sigterm_reaches_the_client_and_the_option_file_is_removed(mysql_login: Login, tmp_path: Path) -> None:
    db = start_shell(mysql_login, *one_statement("mysql", "select sleep(20)"), cwd=tmp_path)
    try:
        pid = running_client(db, "mariadb")
        option_file = Path(os.fsdecode(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1]).partition("=")[2])
        assert option_file.exists()
        db.send_signal(signal.SIGTERM)
        _, stderr = db.communicate(timeout=HANG_GUARD_SECONDS)
    finally:
        if db.poll() is None:
            db.kill()
            db.communicate()
    assert db.returncode == 128 + signal.SIGTERM, stderr  # the client's end, as a shell reports it
    assert not option_file.parent.exists()


# --- errors: one line --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "package"), [("postgres", "postgresql-client"), ("mysql", "mariadb-client"), ("sqlite", "sqlite3")]
)
def test_missing_client_names_the_package(backend: str, package: str, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"DB_TYPE": backend, "DB_HOST": "127.0.0.1", "DB_PASSWORD": PASSWORD, "DB_NAME": "x"}
    result = db_shell("select 1", env=env, cwd=tmp_path, PATH=str(empty))
    assert result.returncode == 127
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert CLIENTS[backend] in result.stderr
    assert f"apt-get install {package}" in result.stderr
    assert_no_secret(result.stderr, "db shell's stderr")


def test_connector_without_a_shell(tmp_path: Path) -> None:
    # Imported here: packages/db-core/tests/test_cli.py loads dbtests.dists as a plugin (assertions
    # rewritten), which fails if this module imported it first.
    from dbtests.dists import SitePackages

    site = tmp_path / "site-packages"
    site.mkdir()
    SitePackages(site).install(
        "db-noshell",
        "1.0",
        {"noshell": "db_noshell:NoShell"},
        {
            "db_noshell": """
                from db_core import DBConnector

                class NoShell(DBConnector):
                    name = "noshell"
                    drivername = "sqlite+aiosqlite"
            """
        },
    )
    result = db_shell("x", env={"DB_TYPE": "noshell"}, cwd=tmp_path, PYTHONPATH=str(site))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "'noshell' connector has no shell" in result.stderr


def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    result = db_shell("-c", "select 1", env={"DB_TYPE": "postgres", "DB_PORT": "0"}, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    # db check's message (a ConfigurationError lists each invalid variable on a line of its own).
    assert result.stderr.startswith("db shell: ")
    assert "DB_PORT='0'" in result.stderr


def test_help(tmp_path: Path) -> None:
    result = db_shell("--help", env={}, cwd=tmp_path)
    assert result.returncode == 0
    assert "db shell -c 'select 1'" in result.stdout
