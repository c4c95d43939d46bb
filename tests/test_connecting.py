"""Connecting to the real servers: default ports from DB_TYPE alone (done means 2), TLS that must not be dropped."""

from __future__ import annotations

import pytest

from db_core import DatabaseSettings, configure, dispose_engine, get_connector_instance, ping
from db_core.cli import describe_error
from dbtests.servers import Server


@pytest.mark.parametrize(
    ("db_type", "backend", "port"),
    [("mysql", "mysql", 3306), ("MariaDB", "mysql", 3306), ("POSTGRES", "postgres", 5432), ("pg", "postgres", 5432)],
)
async def test_type_without_port_connects_on_the_default_port(
    db_type: str, backend: str, port: int, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    if server.port != port:
        pytest.skip(f"the {backend} server under test listens on {server.port}, not the default {port}")
    monkeypatch.setenv("DB_TYPE", db_type)
    monkeypatch.setenv("DB_HOST", server.host)
    monkeypatch.setenv("DB_USER", server.user)
    monkeypatch.setenv("DB_NAME", server.database)
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "5")
    configure(DatabaseSettings(_env_file=None))
    try:
        assert get_connector_instance().url.port == port
        result = await ping()
        assert result.backend == ("mysql" if backend == "mysql" else "postgresql")
    finally:
        await dispose_engine()
        configure(None)


async def test_mysql_refuses_plain_text_when_tls_is_required(mysql_server: Server) -> None:
    have_ssl = await mysql_server.admin("SHOW VARIABLES LIKE 'have_ssl'")
    if have_ssl and have_ssl[0][1] == "YES":
        pytest.skip("this MariaDB offers TLS; the refusal is for servers that do not")
    configure(mysql_server.settings(ssl_mode="require"))
    try:
        with pytest.raises(Exception, match="does not offer TLS") as info:
            await ping()
        assert "DB_SSL_MODE" in str(info.value)
    finally:
        await dispose_engine()
        configure(None)
    # "prefer" falls back to plain text, as libpq's does.
    configure(mysql_server.settings(ssl_mode="prefer"))
    try:
        assert (await ping()).backend == "mysql"
    finally:
        await dispose_engine()
        configure(None)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_database_that_does_not_exist_is_named_with_the_fix(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # What db check and db migrate say, instead of the driver's 'Unknown database' or '3D000'.
    server: Server = request.getfixturevalue(f"{backend}_server")
    settings = DatabaseSettings(
        type=backend, host=server.host, port=server.port, user=server.user, name="no_such_db_4711", _env_file=None
    )
    configure(settings)
    try:
        # SQLAlchemy 2.1 wraps the driver's error in a DBAPIError; 2.0 raises asyncpg's own on connecting.
        with pytest.raises(Exception, match="no_such_db_4711") as caught:
            await ping()
    finally:
        await dispose_engine()
        configure(None)
    assert describe_error(caught.value, settings) == (
        "the database 'no_such_db_4711' does not exist on the server: create it (CREATE DATABASE no_such_db_4711), "
        "or set DB_NAME to one that exists"
    )
    # Any other failure keeps the driver's own words.
    assert "does not exist on the server" not in describe_error(RuntimeError("boom"), settings)
