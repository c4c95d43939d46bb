"""DB_TYPE alone finds the server on the backend's default port (done means 2)."""

from __future__ import annotations

import pytest
from conftest import Server

from db_core import DatabaseSettings, configure, dispose_engine, get_connector_instance, ping


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
