"""Connecting to the real servers: default ports from DB_TYPE alone (done means 2), TLS that must not be dropped."""

from __future__ import annotations

import pytest

from db_core import DatabaseSettings, configure, dispose_engine, get_connector_instance, ping
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
