"""The password: it really is used to log in, and it is never shown.

A throwaway user with a password full of URL-special and non-ASCII characters
logs in on PostgreSQL and on MariaDB through db_core; then the password is
looked for in everything db_core prints, logs or raises. The system
PostgreSQL trusts 127.0.0.1 (any password works), so the wrong-password
checks run against a PostgreSQL of this test run's own, started with
``initdb --auth=scram-sha-256``. The password, the users that have it and the
checks live in ``tests/dbtests/secrets.py``, shared with the fault suite's secret sweep.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import String, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError

from db_core import (
    DatabaseSettings,
    UnitOfWork,
    dispose_engine,
    get_connector_instance,
    get_engine,
    get_settings,
    ping,
)
from dbtests.secrets import (
    FORMS,
    LOGIN_ERRORS,
    PASSWORD,
    UNREACHABLE_PORT,
    WRONG_PASSWORD,
    Login,
    assert_error_has_no_secret,
    assert_no_secret,
    db_check,
)

# The fixtures: login, checked_login (and the servers' users behind them), configured.
pytest_plugins = ["dbtests.secrets"]


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
