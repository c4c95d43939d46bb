"""The password: it really is used to log in, and it is never shown.

A throwaway user with a password full of URL-special and non-ASCII characters
logs in on PostgreSQL and on MariaDB through db_core; then the password is
looked for in everything db_core prints, logs or raises. The system
PostgreSQL trusts 127.0.0.1 (any password works), so the wrong-password
checks run against a PostgreSQL of this test run's own, started with
``initdb --auth=scram-sha-256``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy
from sqlalchemy import String, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError

from db_core import (
    DatabaseSettings,
    UnitOfWork,
    configure,
    dispose_engine,
    get_connector_instance,
    get_engine,
    get_settings,
    ping,
)

# The one place the password is spelled out: no other line of this file may
# contain it, so source lines in a formatted traceback cannot fake a leak.
PASSWORD = "S3cr3t@p:ss/#%\u00e9"
WRONG_PASSWORD = "not-the-password"
# What every spelling of it starts with: raw, URL-encoded, or the latin-1
# rendering of its UTF-8 bytes that the MySQL connector hands to aiomysql.
MARKER = PASSWORD[:6]
FORMS = {
    "raw": PASSWORD,
    "quote(safe='')": quote(PASSWORD, safe=""),
    "quote()": quote(PASSWORD),
    "utf-8 as latin-1": PASSWORD.encode("utf-8").decode("latin-1"),
}
UNREACHABLE_PORT = 1
PG_BINDIR_FALLBACK = "/usr/lib/postgresql/15/bin"

# What a refused login raises: SQLAlchemy 2.1 wraps the driver's error in DBAPIError; 2.0 lets
# asyncpg's own exception through when connecting (aiomysql's are wrapped on both).
LOGIN_ERRORS: tuple[type[BaseException], ...] = (DBAPIError,)
if sqlalchemy.__version__.startswith("2.0."):
    import asyncpg

    LOGIN_ERRORS = (DBAPIError, asyncpg.PostgresError)


def assert_no_secret(text: str, where: str) -> None:
    """Fail naming ``where`` and the spelling found if any form of the password is in ``text``."""
    for label, form in FORMS.items():
        assert form not in text, f"PASSWORD LEAK ({label} form) in {where}: {_around(text, form)}"
    assert MARKER not in text, f"PASSWORD LEAK (partial) in {where}: {_around(text, MARKER)}"


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return repr(text[max(0, at - 120) : at + len(needle) + 60])


def error_texts(exc: BaseException) -> dict[str, str]:
    """str, repr and the formatted traceback of ``exc`` and of every exception chained to it."""
    texts = {"traceback.format_exception": "".join(traceback.format_exception(exc))}
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        name = type(current).__qualname__
        texts[f"str({name})"] = str(current)
        texts[f"repr({name})"] = repr(current)
        texts[f"{name}.args"] = repr(current.args)
        # __context__ too, even where "from None" hides it from tracebacks: error
        # reporters and debuggers walk it.
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            stack += list(current.exceptions)
    return texts


def assert_error_has_no_secret(exc: BaseException, where: str) -> None:
    for label, text_ in error_texts(exc).items():
        assert_no_secret(text_, f"{where}: {label}")


# --- throwaway users on the shared servers --------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """Where and as whom to log in with the password."""

    backend: str
    host: str
    port: int
    database: str
    user: str

    def settings(self, password: str = PASSWORD, **overrides: Any) -> DatabaseSettings:
        values: dict[str, Any] = {
            "type": self.backend,
            "host": self.host,
            "port": self.port,
            "name": self.database,
            "user": self.user,
            "password": password,
            "connect_timeout_seconds": 5,
            "_env_file": None,
        }
        values.update(overrides)
        return DatabaseSettings(**values)

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        return {
            "DB_TYPE": self.backend,
            "DB_HOST": self.host,
            "DB_PORT": str(self.port),
            "DB_NAME": self.database,
            "DB_USER": self.user,
            "DB_PASSWORD": password,
            "DB_CONNECT_TIMEOUT_SECONDS": "5",
        }

    def url(self, encode: str = "safe-empty") -> str:
        scheme = "postgresql" if self.backend == "postgres" else "mysql"
        secret = quote(PASSWORD, safe="") if encode == "safe-empty" else quote(PASSWORD)
        return f"{scheme}://{self.user}:{secret}@{self.host}:{self.port}/{self.database}"


def _user_name() -> str:
    return f"db_test_pw_{uuid.uuid4().hex[:10]}"


def _sql_string(value: str) -> str:
    assert "'" not in value
    assert "\\" not in value
    return f"'{value}'"


@pytest.fixture(scope="module")
def postgres_login(postgres_server: Any) -> Iterator[Login]:
    """A user with the password on the system PostgreSQL (which trusts 127.0.0.1)."""
    name = _user_name()
    asyncio.run(
        postgres_server.admin(
            f"CREATE ROLE {name} LOGIN PASSWORD {_sql_string(PASSWORD)}",
            f"GRANT CONNECT, TEMPORARY ON DATABASE {postgres_server.database} TO {name}",
        )
    )
    try:
        yield Login("postgres", postgres_server.host, postgres_server.port, postgres_server.database, name)
    finally:
        asyncio.run(
            postgres_server.admin(
                f"REVOKE ALL ON DATABASE {postgres_server.database} FROM {name}",
                f"DROP ROLE IF EXISTS {name}",
            )
        )


@pytest.fixture(scope="module")
def mysql_login(mysql_server: Any) -> Iterator[Login]:
    """A user with the password on MariaDB, which checks it."""
    name = _user_name()
    account = f"'{name}'@'%'"
    asyncio.run(
        mysql_server.admin(
            # As the mysql client does: the statement's text is UTF-8.
            "SET NAMES utf8mb4",
            f"CREATE USER {account} IDENTIFIED BY {_sql_string(PASSWORD)}",
            f"GRANT ALL PRIVILEGES ON `{mysql_server.database}`.* TO {account}",
        )
    )
    try:
        yield Login("mysql", mysql_server.host, mysql_server.port, mysql_server.database, name)
    finally:
        asyncio.run(mysql_server.admin(f"DROP USER IF EXISTS {account}"))


# --- a PostgreSQL of our own that checks passwords ------------------------------------------------


@dataclass(frozen=True)
class ScramServer:
    host: str
    port: int
    admin_password: str

    async def admin(self, *statements: str, database: str = "postgres") -> None:
        import asyncpg

        conn = await asyncpg.connect(
            host=self.host, port=self.port, user="postgres", password=self.admin_password, database=database, timeout=10
        )
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


def _pg_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    fallback = Path(PG_BINDIR_FALLBACK)
    return fallback if (fallback / "initdb").exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def scram_server() -> Iterator[ScramServer]:
    """A throwaway PostgreSQL with scram-sha-256 for every connection, stopped at the end of the run.

    It lives in a fresh directory under the system temp dir (pytest's tmp dirs
    are private to root, and the server runs as the ``postgres`` OS user).
    """
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (pg_config --bindir) to start a password-checking server")
    as_user: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root.
        import pwd

        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres OS user to run initdb as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="db_test_scram_"))
    admin_password = uuid.uuid4().hex
    (root / "pwfile").write_text(admin_password + "\n")
    if as_user:
        for path in (root, root / "pwfile"):
            os.chown(path, pg.pw_uid, pg.pw_gid)
    data = root / "data"
    run = {"cwd": root, "capture_output": True, "text": True, "timeout": 120}
    started = False
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256"]
        initdb += [f"--pwfile={root / 'pwfile'}", "-E", "UTF8", "--no-sync"]
        result = subprocess.run([*as_user, *initdb], check=False, **run)  # type: ignore[call-overload]
        assert result.returncode == 0, f"initdb failed:\n{result.stdout}\n{result.stderr}"
        for _attempt in range(3):
            port = _free_port()
            options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB"
            start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60"]
            result = subprocess.run([*as_user, *start, "-o", options, "start"], check=False, **run)  # type: ignore[call-overload]
            if result.returncode == 0:
                started = True
                break
        log = (root / "log").read_text() if (root / "log").exists() else ""
        assert started, f"pg_ctl start failed:\n{result.stdout}\n{result.stderr}\n{log}"
        yield ScramServer("127.0.0.1", port, admin_password)
    finally:
        if started:
            stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"]
            subprocess.run([*as_user, *stop], check=False, **run)  # type: ignore[call-overload]
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def scram_login(scram_server: ScramServer) -> Iterator[Login]:
    """A user with the password on the password-checking PostgreSQL, with a database of the run."""
    name = _user_name()
    database = f"db_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(
        scram_server.admin(
            f"CREATE DATABASE {database}",
            f"CREATE ROLE {name} LOGIN PASSWORD {_sql_string(PASSWORD)}",
            f"REVOKE CONNECT ON DATABASE {database} FROM PUBLIC",
            f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {name}",
        )
    )
    try:
        yield Login("postgres", scram_server.host, scram_server.port, database, name)
    finally:
        asyncio.run(
            scram_server.admin(
                f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
                f"DROP ROLE IF EXISTS {name}",
            )
        )


@pytest.fixture(params=["postgres-trust", "postgres-scram", "mysql"])
def login(request: pytest.FixtureRequest) -> Login:
    fixture = {"postgres-trust": "postgres_login", "postgres-scram": "scram_login", "mysql": "mysql_login"}
    return request.getfixturevalue(fixture[request.param])  # type: ignore[no-any-return]


@pytest.fixture(params=["postgres-scram", "mysql"])
def checked_login(request: pytest.FixtureRequest) -> Login:
    """A server that really checks the password."""
    fixture = {"postgres-scram": "scram_login", "mysql": "mysql_login"}
    return request.getfixturevalue(fixture[request.param])  # type: ignore[no-any-return]


@pytest.fixture
async def configured() -> AsyncIterator[Any]:
    """Call the yielded function to configure db_core; disposed and reset afterwards."""
    yield configure
    await dispose_engine()
    configure(None)


async def current_user() -> str:
    async with UnitOfWork() as session:
        value = (await session.execute(text("SELECT current_user"))).scalar_one()
    return str(value)


def assert_is(user: str, login: Login) -> None:
    # MySQL answers user@host.
    assert user.split("@")[0] == login.user, f"logged in as {user!r}, expected {login.user!r}"


# --- 1. the password logs in ----------------------------------------------------------------------


async def test_password_logs_in_with_settings(login: Login, configured: Any) -> None:
    settings = login.settings()
    assert settings.password.get_secret_value() == PASSWORD
    configured(settings)
    assert_is(await current_user(), login)
    assert (await ping()).backend == ("postgresql" if login.backend == "postgres" else "mysql")


async def test_password_logs_in_from_db_user_and_db_password(
    login: Login, configured: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key, value in login.env().items():
        monkeypatch.setenv(key, value)
    configured(None)
    assert get_settings().password.get_secret_value() == PASSWORD
    assert_is(await current_user(), login)


@pytest.mark.parametrize(("variable", "encode"), [("DB_URL", "safe-empty"), ("DATABASE_URL", "default")])
async def test_password_logs_in_from_url(
    login: Login, variable: str, encode: str, configured: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, login.url(encode))
    configured(None)
    settings = get_settings()
    assert settings.password.get_secret_value() == PASSWORD
    assert (settings.user, settings.host, settings.port, settings.name) == (
        login.user,
        login.host,
        login.port,
        login.database,
    )
    assert_is(await current_user(), login)


async def test_wrong_password_is_refused(checked_login: Login, configured: Any) -> None:
    """The password is really checked: the same user with another password cannot log in."""
    configured(checked_login.settings(WRONG_PASSWORD))
    with pytest.raises(LOGIN_ERRORS) as info:
        await ping()
    message = str(info.value).lower()
    assert "password" in message or "access denied" in message, message


# --- 2. the password is never shown ---------------------------------------------------------------


def _settings_texts(settings: DatabaseSettings) -> dict[str, str]:
    return {
        "repr(settings)": repr(settings),
        "str(settings)": str(settings),
        "settings.model_dump_json()": settings.model_dump_json(),
        "str(settings.model_dump())": str(settings.model_dump()),
        "repr(settings.model_dump())": repr(settings.model_dump()),
        "str(settings.model_dump(mode='json'))": str(settings.model_dump(mode="json")),
        "repr(settings.password)": repr(settings.password),
        "repr(settings.url)": repr(settings.url),
        "format(settings)": f"{settings}",
    }


SOURCES = {
    "kwargs": {},
    "DB_PASSWORD": {"DB_PASSWORD": PASSWORD},
    "DB_URL quote(safe='')": {"DB_URL": f"postgresql://u:{quote(PASSWORD, safe='')}@db.example:5433/app"},
    "DB_URL quote()": {"DB_URL": f"postgresql://u:{quote(PASSWORD)}@db.example:5433/app"},
    "DATABASE_URL": {"DATABASE_URL": f"mysql://u:{quote(PASSWORD, safe='')}@db.example:3307/app?charset=utf8mb4"},
    "DB_URL and DB_PASSWORD": {
        "DB_URL": f"postgresql://u:{quote(PASSWORD, safe='')}@db.example/app",
        "DB_PASSWORD": PASSWORD,
    },
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_settings_never_show_the_password(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SOURCES[source].items():
        monkeypatch.setenv(key, value)
    kwargs: dict[str, Any] = {"type": "postgres", "password": PASSWORD} if source == "kwargs" else {}
    settings = DatabaseSettings(_env_file=None, **kwargs)
    assert settings.password.get_secret_value() == PASSWORD, "the test must hold the real password"
    for label, text_ in _settings_texts(settings).items():
        assert_no_secret(text_, f"{label} [{source}]")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_engine_and_connector_never_show_the_password(backend: str, configured: Any) -> None:
    configured(DatabaseSettings(type=backend, host="db.example", user="u", password=PASSWORD, _env_file=None))
    engine = get_engine()
    connector = get_connector_instance()
    texts = {
        "repr(engine)": repr(engine),
        "str(engine)": str(engine),
        "repr(engine.sync_engine)": repr(engine.sync_engine),
        "str(engine.url)": str(engine.url),
        "repr(engine.url)": repr(engine.url),
        "repr(engine.pool)": repr(engine.pool),
        "repr(get_connector_instance())": repr(connector),
        "str(get_connector_instance())": str(connector),
        "str(connector.url)": str(connector.url),
        "repr(get_settings())": repr(get_settings()),
    }
    for label, text_ in texts.items():
        assert_no_secret(text_, f"{label} [{backend}]")
    # ... while the engine does hold it (or the MySQL connector's latin-1 spelling of it).
    assert engine.url.password in (PASSWORD, FORMS["utf-8 as latin-1"])


async def test_debug_logs_with_echo_never_show_the_password(
    login: Login, configured: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger
    configured(login.settings(echo=True))
    engine = get_engine()
    # echo=True pins sqlalchemy.engine.Engine at INFO; open it up to DEBUG (rows, pool events) as well.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine.Engine")
    await ping()
    secret = bindparam("secret", PASSWORD, type_=String)
    async with UnitOfWork() as session:
        assert (await session.execute(select(func.char_length(secret)))).scalar_one() == len(PASSWORD)
        assert (await session.execute(text("SELECT :a AS a, :b AS b"), {"a": "x", "b": PASSWORD})).all()
    # A failing statement with the password among its parameters: neither the log nor the error shows it.
    with pytest.raises(DBAPIError) as info:
        async with UnitOfWork() as session:
            await session.execute(text("SELECT :p FROM db_test_no_such_table"), {"p": PASSWORD})
    assert_error_has_no_secret(info.value, f"error of a failing statement [{login.backend}]")
    await dispose_engine()
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records), "echo=True logged nothing"
    assert any("char_length" in r.getMessage().lower() for r in caplog.records), "the SQL was not logged"
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"log record {record.name} [{login.backend}]")
        assert_no_secret(repr(record.args), f"log record args {record.name} [{login.backend}]")
    assert_no_secret(caplog.text, f"caplog.text [{login.backend}]")
    out, err = capsys.readouterr()
    assert_no_secret(out + err, f"stdout/stderr with echo=True [{login.backend}]")
    assert engine.url.password in (PASSWORD, FORMS["utf-8 as latin-1"])


async def _connect_error(settings: DatabaseSettings, configured: Any) -> BaseException:
    configured(settings)
    with pytest.raises((*LOGIN_ERRORS, OSError)) as info:
        await ping()
    await dispose_engine()
    configured(None)
    return info.value


async def test_wrong_password_error_never_shows_the_password(checked_login: Login, configured: Any) -> None:
    # The wrong password is a near miss of the right one; the right one must not appear either.
    near_miss = PASSWORD + "x"
    exc = await _connect_error(checked_login.settings(near_miss), configured)
    assert_error_has_no_secret(exc, f"wrong-password error [{checked_login.backend}]")
    # And through a unit of work.
    configured(checked_login.settings(near_miss))
    with pytest.raises(LOGIN_ERRORS) as info:
        async with UnitOfWork() as session:
            await session.execute(text("SELECT 1"))
    assert_error_has_no_secret(info.value, f"wrong-password error in a UnitOfWork [{checked_login.backend}]")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_unreachable_host_error_never_shows_the_password(backend: str, configured: Any) -> None:
    settings = DatabaseSettings(
        type=backend,
        host="127.0.0.1",
        port=UNREACHABLE_PORT,
        user="u",
        password=PASSWORD,
        connect_timeout_seconds=5,
        _env_file=None,
    )
    exc = await _connect_error(settings, configured)
    assert_error_has_no_secret(exc, f"unreachable-host error [{backend}]")
    url_settings = DatabaseSettings(
        url=f"{backend}://u:{quote(PASSWORD, safe='')}@127.0.0.1:{UNREACHABLE_PORT}/app",
        connect_timeout_seconds=5,
        _env_file=None,
    )
    exc = await _connect_error(url_settings, configured)
    assert_error_has_no_secret(exc, f"unreachable-host error, settings from DB_URL [{backend}]")


# --- db check ------------------------------------------------------------------------------------


def db_check(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_") and k != "DATABASE_URL"}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "db_core", "check"],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_check_succeeds_without_showing_the_password(login: Login, tmp_path: Path) -> None:
    for label, env in {"DB_* parts": login.env(), "DB_URL": {"DB_URL": login.url()}}.items():
        result = db_check(env, tmp_path)
        assert result.returncode == 0, f"db check failed [{label}]: {result.stderr}"
        assert_no_secret(result.stdout + result.stderr, f"db check output [{login.backend}, {label}]")
        assert f"{login.user}:***@" in result.stdout


def test_db_check_wrong_password_without_showing_it(checked_login: Login, tmp_path: Path) -> None:
    # The right password with one character more: a leak of the attempt shows the real one too.
    result = db_check(checked_login.env(PASSWORD + "x"), tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith("db check: cannot connect to"), result.stderr
    assert_no_secret(result.stdout + result.stderr, f"db check wrong-password output [{checked_login.backend}]")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_db_check_unreachable_without_showing_the_password(backend: str, tmp_path: Path) -> None:
    base = {"DB_CONNECT_TIMEOUT_SECONDS": "2"}
    variants = {
        "DB_* parts": {
            "DB_TYPE": backend,
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(UNREACHABLE_PORT),
            "DB_USER": "u",
            "DB_PASSWORD": PASSWORD,
        },
        "DB_URL": {"DB_URL": f"{backend}://u:{quote(PASSWORD)}@127.0.0.1:{UNREACHABLE_PORT}/app"},
    }
    for label, env in variants.items():
        started = time.monotonic()
        result = db_check({**base, **env}, tmp_path)
        assert result.returncode == 1, result
        assert result.stderr.startswith("db check: cannot connect to"), result.stderr
        assert_no_secret(result.stdout + result.stderr, f"db check unreachable output [{backend}, {label}]")
        assert time.monotonic() - started < 60


def test_db_check_invalid_url_without_showing_the_password(tmp_path: Path) -> None:
    # Unencoded: "@", ":" and "/" in the password make this no valid URL.
    result = db_check({"DB_URL": f"postgresql://u:{PASSWORD}@db.example/app"}, tmp_path)
    assert result.returncode == 2, result
    assert "DB_URL" in result.stderr
    assert_no_secret(result.stdout + result.stderr, "db check invalid-DB_URL output")
