"""What db-psycopg adds to the contract: its own setting, libpq's options, and its error notes."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from db_core import ConfigurationError, DatabaseSettings, UnitOfWork, configure, dispose_engine, get_connector, ping
from db_core.testing import unavailable


@pytest.fixture
def settings() -> DatabaseSettings:
    """The DB_* settings, as the psycopg connector's."""
    return DatabaseSettings().model_copy(update={"type": "psycopg"})


@pytest.fixture
def server(settings: DatabaseSettings) -> DatabaseSettings:
    """``settings``, once the server answered."""

    async def check() -> None:
        configure(settings)
        try:
            await ping()
        finally:
            await dispose_engine()
            configure(None)

    try:
        asyncio.run(check())
    except Exception as exc:
        unavailable(f"no PostgreSQL server for the db-psycopg tests ({type(exc).__name__}: {exc}); set DB_*")
    return settings


def run_statements(settings: DatabaseSettings, statements: list[str]) -> list[object]:
    """Each statement in one unit of work; the last one's scalar."""

    async def body() -> list[object]:
        configure(settings)
        try:
            async with UnitOfWork() as session:
                return [await session.scalar(text(statement)) for statement in statements]
        finally:
            await dispose_engine()
            configure(None)

    return asyncio.run(body())


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "true"])
def test_bad_prepare_threshold_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, settings: DatabaseSettings, value: str
) -> None:
    monkeypatch.setenv("DB_PSYCOPG_PREPARE_THRESHOLD", value)
    with pytest.raises(ConfigurationError, match=f"DB_PSYCOPG_PREPARE_THRESHOLD='{value}' is invalid"):
        get_connector(settings)


@pytest.mark.parametrize(("value", "expected"), [("none", None), ("", None), (" 7 ", 7), ("0", 0)])
def test_prepare_threshold_values(
    monkeypatch: pytest.MonkeyPatch, settings: DatabaseSettings, value: str, expected: int | None
) -> None:
    monkeypatch.setenv("DB_PSYCOPG_PREPARE_THRESHOLD", value)
    connector = get_connector(settings)
    assert connector.prepare_threshold == expected  # type: ignore[attr-defined]


def test_unknown_option_is_refused_before_connecting(settings: DatabaseSettings) -> None:
    with pytest.raises(ConfigurationError, match=r"DB_OPTIONS .* no_such_libpq_option='1' cannot be used"):
        get_connector(settings.model_copy(update={"options": {"no_such_libpq_option": "1"}}))


@pytest.mark.parametrize(("threshold", "prepared"), [("none", 0), ("0", 1)])
def test_prepare_threshold_reaches_psycopg(
    monkeypatch: pytest.MonkeyPatch, server: DatabaseSettings, threshold: str, prepared: int
) -> None:
    # Behind PgBouncer in transaction mode "none" is what keeps statements from going missing.
    monkeypatch.setenv("DB_PSYCOPG_PREPARE_THRESHOLD", threshold)
    statements = ["SELECT 1 + 1"] * 3 + ["SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT 1 + 1'"]
    assert run_statements(server, statements)[-1] == prepared


def test_statement_timeout_error_names_the_setting(server: DatabaseSettings) -> None:
    with pytest.raises(Exception, match="canceling statement due to statement timeout") as info:
        run_statements(server.model_copy(update={"statement_timeout_seconds": 0.2}), ["SELECT pg_sleep(10)"])
    assert any("DB_STATEMENT_TIMEOUT_SECONDS=0.2" in note for note in getattr(info.value, "__notes__", []))
