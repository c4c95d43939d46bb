"""The connector registry: entry points, aliases, clear errors, register_connector (done means 2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from db_core import (
    API_VERSION,
    ConnectorLoadError,
    ConnectorNotFoundError,
    DatabaseSettings,
    DBConnector,
    available_connectors,
    get_connector,
    register_connector,
    registry,
    resolve_connector,
    unregister_connector,
)


class InCodeConnector(DBConnector):
    name = "incode"
    drivername = "sqlite+aiosqlite"
    default_database = "incode.db"


@pytest.fixture
def in_code() -> Iterator[type[DBConnector]]:
    register_connector("incode", InCodeConnector, aliases=("ic",))
    yield InCodeConnector
    unregister_connector("incode")


def test_installed_connectors_are_listed_without_importing_them() -> None:
    infos = {i.name: i for i in available_connectors()}
    assert {"postgres", "mysql", "sqlite"} <= set(infos)
    assert infos["postgres"].distribution == "db-postgres"
    assert infos["postgres"].target == "db_postgres:PostgresConnector"
    assert {"postgresql", "pg"} <= set(infos["postgres"].aliases)
    assert "mariadb" in infos["mysql"].aliases


def test_unknown_type_names_installed_backends() -> None:
    with pytest.raises(ConnectorNotFoundError) as info:
        resolve_connector("oracle")
    message = str(info.value)
    assert "oracle" in message
    for name in ("postgres", "mysql", "sqlite"):
        assert name in message


def test_missing_first_party_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # An environment where db-postgres is not installed: its entry point is absent.
    by_name, infos = registry._discover()
    without = {k: v for k, v in by_name.items() if v.value.split(":")[0] != "db_postgres"}
    monkeypatch.setattr(registry, "_discover", lambda: (without, tuple(i for i in infos if i.name != "postgres")))
    monkeypatch.setattr(registry, "_loaded", {})
    for spelling in ("postgres", "PG", "postgresql"):
        with pytest.raises(ConnectorNotFoundError) as info:
            resolve_connector(spelling)
        assert 'pip install "db-core[postgres]"' in str(info.value)
        assert "installed: mysql, sqlite" in str(info.value)


def test_register_connector_and_aliases(in_code: type[DBConnector]) -> None:
    assert resolve_connector("INCODE") is in_code
    assert resolve_connector("ic") is in_code
    assert "incode" in {i.name for i in available_connectors()}
    assert get_connector(DatabaseSettings(type="ic", _env_file=None)).url.database == "incode.db"


def test_unregister_connector(in_code: type[DBConnector]) -> None:
    unregister_connector("incode")
    with pytest.raises(ConnectorNotFoundError):
        resolve_connector("ic")


def test_wrong_api_version_is_refused() -> None:
    class Future(DBConnector):
        api_version: ClassVar[int] = API_VERSION + 1

    with pytest.raises(ConnectorLoadError, match="API version"):
        register_connector("future", Future)


def test_not_a_connector_is_refused() -> None:
    with pytest.raises(ConnectorLoadError, match=r"not a db_core\.DBConnector"):
        register_connector("nope", object)  # type: ignore[arg-type]


def test_unset_type_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several connectors installed: the seed's default.
    assert registry.default_type(DatabaseSettings(_env_file=None)) == "postgres"
    # Only one installed: that one.
    by_name, infos = registry._discover()
    only = tuple(i for i in infos if i.name == "sqlite")
    monkeypatch.setattr(registry, "_discover", lambda: (by_name, only))
    assert registry.default_type(DatabaseSettings(_env_file=None)) == "sqlite"
    # DB_URL's scheme wins over both.
    assert registry.default_type(DatabaseSettings(url="mysql://u@h/d", _env_file=None)) == "mysql"


def test_unset_type_says_the_default_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    by_name, infos = registry._discover()
    without = {k: v for k, v in by_name.items() if v.value.split(":")[0] != "db_postgres"}
    monkeypatch.setattr(registry, "_discover", lambda: (without, tuple(i for i in infos if i.name != "postgres")))
    monkeypatch.setattr(registry, "_loaded", {})
    with pytest.raises(ConnectorNotFoundError, match=r"DB_TYPE is not set, so the default 'postgres' was tried"):
        get_connector(DatabaseSettings(_env_file=None))
