"""``db init``: the questions answered through a real terminal, and with flags and ``--yes``.

The environment's ``db`` script runs in a fresh project directory with no
``DB_*`` variables, under a pseudo-terminal (pexpect) where a user would type
the answers, the password among them: the terminal's whole output (the echo
of what was typed included) must never show it. The ``.env`` it writes must
be mode 0600 and accepted by ``db check`` on real PostgreSQL (one that checks
passwords), MariaDB and SQLite; Ctrl-C at any prompt must leave no file.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db_core import DatabaseSettings
from db_core.scaffold import Answers, env_text, write_private_file
from dbtests.secrets import PASSWORD, Login, assert_no_secret

pytest_plugins = ["dbtests.secrets"]

DB = Path(sys.executable).parent / "db"
TIMEOUT = 30


def clean_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without the developer's ``DB_*`` variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_") and k.upper() != "DATABASE_URL"}
    env.update(extra)
    return env


@pytest.fixture
def no_db_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's ``DB_*`` variables out of the way of ``DatabaseSettings``."""
    for key in list(os.environ):
        if key.upper().startswith("DB_") or key.upper() == "DATABASE_URL":
            monkeypatch.delenv(key)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_back(env_file: Path) -> DatabaseSettings:
    return DatabaseSettings(_env_file=env_file)


def db_check(cwd: Path) -> subprocess.CompletedProcess[str]:
    """A separate ``db check`` in the project directory: only its ``.env`` configures it."""
    return subprocess.run(
        [str(DB), "check"], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def db_init(*args: str, cwd: Path, input: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``db init ARGS`` without a terminal: stdin a pipe."""
    return subprocess.run(
        [str(DB), "init", *args],
        cwd=cwd,
        env=clean_env(**env),
        input=input,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


class Terminal:
    """``db init`` under a pseudo-terminal, with everything it shows recorded."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.screen = io.StringIO()
        self.child = pexpect.spawn(
            str(DB),
            ["init", *args],
            cwd=str(cwd),
            env=clean_env(TERM="dumb"),
            encoding="utf-8",
            timeout=TIMEOUT,
            dimensions=(50, 200),
        )
        self.child.logfile_read = self.screen

    def answer(self, question: str, text: str) -> None:
        """Wait for the prompt that starts with ``question`` (up to its ``]: ``) and type ``text``."""
        self.child.expect_exact(question)
        self.child.expect_exact("]: ")
        self.child.sendline(text)

    def answer_password(self, password: str) -> None:
        self.child.expect_exact("password (hidden, not echoed; empty for none): ")
        self.child.sendline(password)

    def interrupt(self, question: str) -> None:
        self.child.expect_exact(question)
        self.child.sendcontrol("c")

    def finish(self) -> int:
        """The exit status once it ends (the check included)."""
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus is not None, f"killed by signal {self.child.signalstatus}"
        return int(self.child.exitstatus)

    @property
    def text(self) -> str:
        return self.screen.getvalue()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    return directory


def server_login(request: pytest.FixtureRequest, backend: str) -> Login:
    fixture = {"postgres": "scram_login", "mysql": "mysql_login"}[backend]
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


# -- through a terminal ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_terminal_answers_on_a_server(
    backend: str, request: pytest.FixtureRequest, project: Path, no_db_env: None
) -> None:
    login = server_login(request, backend)
    terminal = Terminal(cwd=project)
    terminal.answer("database backend (postgres, mysql, sqlite) [postgres", "mariadb" if backend == "mysql" else "")
    terminal.answer("FastAPI integration? (yes/no) [yes", "")
    terminal.answer("unit of work? (yes/no) [yes", "maybe")  # asked again, with the reason
    terminal.answer("unit of work? (yes/no) [yes", "no")
    terminal.answer("pool settings: defaults (pool size 10, max overflow 20) or custom? [defaults", "custom")
    terminal.answer("pool size [10", "0")  # the settings' own rule: at least 1
    terminal.answer("pool size [10", "5")
    terminal.answer("max overflow [20", "7")
    terminal.answer("host [localhost", login.host)
    terminal.answer(f"port [{5432 if backend == 'postgres' else 3306}", "70000")
    terminal.answer("port [", str(login.port))
    terminal.answer("database name [app", login.database)
    terminal.answer("user [app", login.user)
    terminal.answer_password(PASSWORD)
    terminal.answer("write an example module? (yes/no) [no", "")
    status = terminal.finish()

    screen = terminal.text
    assert_no_secret(screen, "the terminal of db init")
    assert status == 0, screen
    assert "answer yes or no" in screen
    assert "DB_POOL_SIZE=0 is invalid" in screen
    assert "DB_PORT=70000 is invalid" in screen
    assert "DB_PASSWORD=***" in screen
    assert f'pip install "db-core[{backend},fastapi]"' in screen
    assert f"server:     {backend}" in screen  # db check at the end reached the server
    env_file = project / ".env"
    assert mode(env_file) == 0o600
    assert sorted(p.name for p in project.iterdir()) == [".env"]
    settings = read_back(env_file)
    assert settings.type == backend
    assert (settings.host, settings.port, settings.name, settings.user) == (
        login.host,
        login.port,
        login.database,
        login.user,
    )
    assert settings.password.get_secret_value() == PASSWORD
    assert (settings.pool_size, settings.max_overflow) == (5, 7)
    check = db_check(project)
    assert check.returncode == 0, check.stderr
    assert_no_secret(check.stdout + check.stderr, "db check")


def test_terminal_answers_on_sqlite(project: Path, no_db_env: None) -> None:
    terminal = Terminal(cwd=project)
    terminal.answer("database backend (postgres, mysql, sqlite) [postgres", "sqlite")
    terminal.answer("FastAPI integration? (yes/no) [yes", "no")
    terminal.answer("unit of work? (yes/no) [yes", "")
    terminal.answer("pool settings: defaults (pool size 1, max overflow 0) or custom? [defaults", "")
    terminal.answer("database file [app.db", "data base #1.db")
    terminal.answer("write an example module? (yes/no) [no", "yes")
    terminal.answer("  example module file [app.py", ".env")  # refused, asked again
    terminal.answer("  example module file [app.py", "job.py")
    status = terminal.finish()

    assert status == 0, terminal.text
    assert "password" not in terminal.text.replace("A password", "")
    assert "is the env file" in terminal.text
    assert 'pip install "db-core[sqlite]"' in terminal.text
    assert mode(project / ".env") == 0o600
    assert read_back(project / ".env").name == "data base #1.db"
    assert (project / "data base #1.db").exists()  # created by the check
    assert db_check(project).returncode == 0
    # The script example runs its unit of work on the database of .env.
    run = subprocess.run(
        [sys.executable, "job.py"], cwd=project, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "SELECT 1 -> 1\n"


# -- Ctrl-C ---------------------------------------------------------------------------------------------------------

SERVER_FLAGS = ("--backend", "postgres", "--host", "127.0.0.1", "--port", "1", "--name", "n", "--user", "u")


def test_ctrl_c_at_the_password_prompt_leaves_nothing(project: Path) -> None:
    terminal = Terminal(*SERVER_FLAGS, cwd=project)
    terminal.answer("FastAPI integration? (yes/no) [yes", "")
    terminal.answer("unit of work? (yes/no) [yes", "")
    terminal.answer("pool settings", "")
    terminal.interrupt("password (hidden, not echoed; empty for none): ")
    assert terminal.finish() == 130
    assert "cancelled; nothing written" in terminal.text
    assert list(project.iterdir()) == []


def test_ctrl_c_at_a_later_prompt_keeps_the_old_file(project: Path) -> None:
    old = b"DB_TYPE=sqlite\n# my own\n"
    (project / ".env").write_bytes(old)
    terminal = Terminal(*SERVER_FLAGS, "--fastapi", "--unit-of-work", "--force", cwd=project)
    terminal.answer("pool settings", "")
    terminal.answer_password(PASSWORD)
    terminal.interrupt("write an example module? (yes/no) [no]: ")
    assert terminal.finish() == 130
    assert_no_secret(terminal.text, "the terminal of db init")
    assert sorted(p.name for p in project.iterdir()) == [".env"]  # no backup, no temporary file
    assert (project / ".env").read_bytes() == old


# -- without a terminal ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_yes_with_flags(backend: str, request: pytest.FixtureRequest, project: Path, no_db_env: None) -> None:
    """PostgreSQL takes the password from DB_PASSWORD, MariaDB from --password-stdin."""
    login = server_login(request, backend)
    flags = ["--yes", "--backend", backend, "--host", login.host, "--port", str(login.port)]
    flags += ["--name", login.database, "--user", login.user, "--no-fastapi"]
    if backend == "postgres":
        result = db_init(*flags, cwd=project, DB_PASSWORD=PASSWORD)
    else:
        result = db_init(*flags, "--password-stdin", cwd=project, input=PASSWORD + "\n")
    output = result.stdout + result.stderr
    assert_no_secret(output, "db init --yes")
    assert result.returncode == 0, output
    assert "[" not in output.replace(f'"db-core[{backend}]"', "")  # no question was asked
    assert f"server:     {backend}" in output
    assert mode(project / ".env") == 0o600
    settings = read_back(project / ".env")
    assert settings.password.get_secret_value() == PASSWORD
    assert (settings.pool_size, settings.max_overflow) == (None, None)  # the defaults: not written
    assert db_check(project).returncode == 0


def test_yes_defaults_on_sqlite_and_a_fastapi_example(project: Path) -> None:
    result = db_init("--yes", "--backend", "sqlite", "--example", "app.py", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'pip install "db-core[sqlite,fastapi]"' in result.stdout
    assert "uvicorn app:app" in result.stdout
    assert sorted(p.name for p in project.iterdir()) == [".env", "app.db", "app.py"]
    # One request through each route of the example, as the application would run in its directory.
    client = """
import asyncio, httpx
from app import app
async def main():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for path in ("/", "/report"):
            response = await client.get(path)
            print(response.status_code, response.json())
asyncio.run(main())
"""
    run = subprocess.run(
        [sys.executable, "-c", client], cwd=project, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["200 {'select_1': 1}", "200 {'select_2': 2}"]


def test_no_terminal_without_yes_fails_in_one_line(project: Path) -> None:
    result = db_init(cwd=project)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--yes" in result.stderr
    assert list(project.iterdir()) == []


def test_invalid_flag_fails_before_writing(project: Path) -> None:
    result = db_init("--yes", "--pool-size", "0", cwd=project)
    assert result.returncode == 2
    assert "DB_POOL_SIZE=0 is invalid" in result.stderr
    assert list(project.iterdir()) == []


def test_existing_env_file_is_kept_without_force_and_backed_up_with_it(project: Path) -> None:
    env_file = project / ".env"
    old = b"DB_TYPE=sqlite\nDB_NAME=mine.db\n"
    env_file.write_bytes(old)
    env_file.chmod(0o644)
    kept = db_init("--yes", "--backend", "sqlite", cwd=project)
    assert kept.returncode == 1
    assert kept.stderr.count("\n") == 1, kept.stderr
    assert "--force" in kept.stderr
    assert env_file.read_bytes() == old
    assert sorted(p.name for p in project.iterdir()) == [".env"]

    replaced = db_init("--yes", "--backend", "sqlite", "--name", "new.db", "--force", "--no-check", cwd=project)
    assert replaced.returncode == 0, replaced.stderr
    backup = project / ".env.bak"
    assert backup.read_bytes() == old
    assert mode(backup) == 0o600
    assert mode(env_file) == 0o600
    assert "DB_NAME='new.db'" in env_file.read_text()
    assert sorted(p.name for p in project.iterdir()) == [".env", ".env.bak"]


# -- the file's quoting ---------------------------------------------------------------------------------------------

AWKWARD = [
    " #\"'$HOME ${HOME} $${HOME} ${:-$} \\ \\' \\\\' % \u00e9 ",
    "'",
    "\\",
    "${",
    "a=b # c",
    "\u00e9\u4e2d\U0001f600",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_values_read_back_exactly(value: str, tmp_path: Path, no_db_env: None) -> None:
    answers = Answers(backend="postgres", host=value, name=value, user=value, password=value)
    env_file = tmp_path / ".env"
    env_file.write_text(env_text(answers), encoding="utf-8")
    settings = read_back(env_file)
    assert (settings.host, settings.name, settings.user) == (value, value, value)
    assert settings.password.get_secret_value() == value


LINE_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n\r\x00"), min_size=1)


@settings(max_examples=200, deadline=None)
@given(value=LINE_TEXT)
def test_any_one_line_password_reads_back_exactly(value: str) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"db-init-roundtrip-{os.getpid()}.env"
    try:
        path.write_text(env_text(Answers(backend="postgres", password=value)), encoding="utf-8")
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("DB_")}
        try:
            password = read_back(path).password.get_secret_value()
        finally:
            os.environ.update(saved)
    finally:
        path.unlink(missing_ok=True)
    assert password == value


@pytest.mark.parametrize("replace", [True, False])
def test_interrupted_write_leaves_the_old_file_and_no_temporary(
    replace: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / ".env"
    if replace:
        target.write_bytes(b"old\n")

    def interrupted(descriptor: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_private_file(target, b"DB_PASSWORD='x'\n", replace=replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([".env"] if replace else [])
    if replace:
        assert target.read_bytes() == b"old\n"
