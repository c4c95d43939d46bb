"""The password the secret tests log in with, the users that have it, and the checks that it is never shown.

A throwaway user with a password full of URL-special and non-ASCII characters
logs in on the system PostgreSQL (which trusts 127.0.0.1, so any password
works), on a PostgreSQL of the test run's own started with
``--auth=scram-sha-256`` (which checks it), and on MariaDB (which checks it).
A test module gets the fixtures with ``pytest_plugins = ["dbtests.secrets"]``
(one scram server then serves every module) and looks for the password with
:func:`assert_no_secret` / :func:`assert_error_has_no_secret`.

PYTEST_DONT_REWRITE: the modules import it before pytest registers it as a
plugin, too late for assertion rewriting; its assertions say what they found.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy
from sqlalchemy.exc import DBAPIError

from db_core import DatabaseSettings, configure, dispose_engine
from dbtests.servers import PostgresCluster, postgres_cluster

# The one place the password is spelled out: no other line of the test files may
# contain it, so source lines in a formatted traceback cannot fake a leak.
PASSWORD = "S3cr3t@p:ss/#%\u00e9"
WRONG_PASSWORD = "not-the-password"
# What every spelling of it starts with: raw, URL-encoded, or the latin-1
# rendering of its UTF-8 bytes that the MySQL connector hands to aiomysql.
MARKER = PASSWORD[:6]
UNREACHABLE_PORT = 1

# What a refused login raises: SQLAlchemy 2.1 wraps the driver's error in DBAPIError; 2.0 lets
# asyncpg's own exception through when connecting (aiomysql's are wrapped on both).
LOGIN_ERRORS: tuple[type[BaseException], ...] = (DBAPIError,)
if sqlalchemy.__version__.startswith("2.0."):
    import asyncpg

    LOGIN_ERRORS = (DBAPIError, asyncpg.PostgresError)


def secret_forms(password: str) -> dict[str, str]:
    """The spellings of ``password`` a leak could take: raw, URL-encoded, or its UTF-8 bytes read as latin-1."""
    forms = {"raw": password, "quote(safe='')": quote(password, safe=""), "quote()": quote(password)}
    # A password from undecodable environment bytes holds lone surrogates: it has no UTF-8 form.
    forms["utf-8 as latin-1"] = password.encode("utf-8", "surrogateescape").decode("latin-1")
    return forms


FORMS = secret_forms(PASSWORD)


def assert_no_secret(text: str, where: str, password: str = PASSWORD, marker: str = MARKER) -> None:
    """Fail naming ``where`` and the spelling found if any form of ``password`` (or ``marker``) is in ``text``."""
    for label, form in secret_forms(password).items():
        assert form not in text, f"PASSWORD LEAK ({label} form) in {where}: {_around(text, form)}"
    assert marker not in text, f"PASSWORD LEAK (partial) in {where}: {_around(text, marker)}"


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


def assert_error_has_no_secret(exc: BaseException, where: str, password: str = PASSWORD, marker: str = MARKER) -> None:
    """:func:`assert_no_secret` over everything :func:`error_texts` finds in ``exc``."""
    for label, text_ in error_texts(exc).items():
        assert_no_secret(text_, f"{where}: {label}", password, marker)


# --- throwaway users that have the password --------------------------------------------------------


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


def user_name() -> str:
    return f"db_test_pw_{uuid.uuid4().hex[:10]}"


def sql_string(value: str) -> str:
    assert "'" not in value
    assert "\\" not in value
    return f"'{value}'"


@pytest.fixture(scope="module")
def postgres_login(postgres_server: Any) -> Iterator[Login]:
    """A user with the password on the system PostgreSQL (which trusts 127.0.0.1)."""
    name = user_name()
    asyncio.run(
        postgres_server.admin(
            f"CREATE ROLE {name} LOGIN PASSWORD {sql_string(PASSWORD)}",
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
    name = user_name()
    account = f"'{name}'@'%'"
    asyncio.run(
        mysql_server.admin(
            # As the mysql client does: the statement's text is UTF-8.
            "SET NAMES utf8mb4",
            f"CREATE USER {account} IDENTIFIED BY {sql_string(PASSWORD)}",
            f"GRANT ALL PRIVILEGES ON `{mysql_server.database}`.* TO {account}",
        )
    )
    try:
        yield Login("mysql", mysql_server.host, mysql_server.port, mysql_server.database, name)
    finally:
        asyncio.run(mysql_server.admin(f"DROP USER IF EXISTS {account}"))


@pytest.fixture(scope="session")
def scram_server() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL that checks every password (scram-sha-256), stopped at the end of the run."""
    with postgres_cluster(auth="scram-sha-256") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def scram_login(scram_server: PostgresCluster) -> Iterator[Login]:
    """A user with the password on the password-checking PostgreSQL, with a database of the run."""
    name = user_name()
    database = f"db_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(
        scram_server.admin(
            f"CREATE DATABASE {database}",
            f"CREATE ROLE {name} LOGIN PASSWORD {sql_string(PASSWORD)}",
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
    """Each server in turn: the trusting PostgreSQL, the password-checking one, MariaDB."""
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


def db_check(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m db_core check`` with only ``env`` as its ``DB_*`` variables."""
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
