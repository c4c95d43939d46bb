"""Replicas, named databases and PgBouncer in ``DB_*``: what they read as, and errors that name the variable."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from db_core import ConfigurationError, DatabaseSettings, UnknownDatabaseError

PASSWORD = "S3cr3t@p:ss/#%\u00e9"
QUOTED = quote(PASSWORD, safe="")


def read(monkeypatch: pytest.MonkeyPatch, **env: str) -> DatabaseSettings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return DatabaseSettings(_env_file=None)


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        read(monkeypatch, **env)
    message = str(info.value)
    assert "S3cr3t" not in message
    return message


def test_replicas_take_what_their_url_leaves_out_from_the_primary(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = read(
        monkeypatch,
        DB_URL=f"postgresql://app:{QUOTED}@primary:5432/shop",
        DB_POOL_SIZE="7",
        DB_REPLICA_URLS="postgresql://standby-1, postgresql://reader@standby-2:6432/copy",
    )
    first, second = settings.replicas
    assert (first.host, first.port, first.user, first.name, first.pool_size) == ("standby-1", 5432, "app", "shop", 7)
    assert first.password.get_secret_value() == PASSWORD
    assert (second.host, second.port, second.user, second.name) == ("standby-2", 6432, "reader", "copy")
    assert second.password.get_secret_value() == PASSWORD
    assert first.type == second.type == "postgresql"
    assert first.replicas == ()
    assert "S3cr3t" not in repr(settings)


def test_replicas_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = read(monkeypatch, DB_TYPE="mysql", DB_REPLICA_URLS='["mysql://r1:3307", "mysql://r2"]')
    assert [(r.host, r.port) for r in settings.replicas] == [("r1", 3307), ("r2", None)]


def test_no_replicas_by_default() -> None:
    settings = DatabaseSettings(_env_file=None)
    assert settings.replicas == ()
    assert settings.database_names == ("default",)
    assert settings.direct is settings


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DB_REPLICA_URLS": f"postgresql://u:{QUOTED}@r1:99999/x"}, "DB_REPLICA_URLS (replica 1)=*** is invalid"),
        ({"DB_REPLICA_URLS": f"postgresql://r1,nonsense{PASSWORD}"}, "DB_REPLICA_URLS=*** is invalid: replica 2"),
        ({"DB_REPLICA_URLS": "[not json"}, "is not a JSON list of URLs"),
        ({"DB_REPLICA_MAX_LAG_SECONDS": "0"}, "DB_REPLICA_MAX_LAG_SECONDS='0' is invalid"),
        ({"DB_READ_YOUR_WRITES_SECONDS": "-1"}, "DB_READ_YOUR_WRITES_SECONDS='-1' is invalid"),
        ({"DB_REPLICA_FALLBACK": "random"}, "DB_REPLICA_FALLBACK='random' is invalid"),
        ({"DB_PGBOUNCER": "statement"}, "DB_PGBOUNCER='statement' is invalid"),
        ({"DB_DIRECT_URL": f"postgresql://u:{QUOTED}@h:0/x"}, "DB_DIRECT_URL=*** is invalid"),
        ({"DB_DATABASES__ANALYTICS__POOL_SIZE": "0"}, "DB_DATABASES__ANALYTICS__POOL_SIZE=0 is invalid"),
        (
            {"DB_DATABASES__ANALYTICS__URL": f"mysql://u:{QUOTED}@h:70000/x"},
            "DB_DATABASES__ANALYTICS__URL=*** is invalid: its port",
        ),
        (
            {"DB_DATABASES__ANALYTICS__REPLICA_URLS": f"mysql://u:{QUOTED}@h:70000/x"},
            "DB_DATABASES__ANALYTICS__REPLICA_URLS (replica 1)=*** is invalid",
        ),
        ({"DB_DATABASES__DEFAULT__URL": "sqlite:///x.db"}, "'default' cannot name a database"),
        ({"DB_DATABASES__9LIVES__URL": "sqlite:///x.db"}, "'9lives' cannot name a database"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    assert expected in refused(monkeypatch, DB_PASSWORD=PASSWORD, **env)


def test_named_databases_from_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = read(
        monkeypatch,
        DB_URL=f"postgresql://app:{QUOTED}@primary/shop",
        DB_POOL_SIZE="7",
        DB_DATABASES__ANALYTICS__URL=f"postgresql://analyst:{QUOTED}@warehouse/facts",
        DB_DATABASES__ANALYTICS__REPLICA_URLS="postgresql://warehouse-standby",
        DB_DATABASES__Cache__TYPE="sqlite",
        DB_DATABASES__Cache__NAME="cache.db",
    )
    assert settings.database_names == ("default", "analytics", "cache")
    analytics = settings.database("Analytics")
    assert (analytics.host, analytics.user, analytics.name) == ("warehouse", "analyst", "facts")
    # A named database is configured by its own variables alone: nothing comes from DB_*.
    assert analytics.pool_size is None
    assert [r.host for r in analytics.replicas] == ["warehouse-standby"]
    assert analytics.replicas[0].user == "analyst"
    assert settings.database("cache").type == "sqlite"
    assert "S3cr3t" not in repr(settings)
    with pytest.raises(UnknownDatabaseError) as unknown:
        settings.database("reports")
    assert str(unknown.value).startswith("no database named 'reports' is configured (configured: default, analytics")


def test_a_direct_url_for_pgbouncer(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = read(
        monkeypatch,
        DB_URL=f"postgresql://app:{QUOTED}@bouncer:6432/shop",
        DB_PGBOUNCER="transaction",
        DB_DIRECT_URL="postgresql://db-1:5432",
    )
    direct = settings.direct
    assert (direct.host, direct.port, direct.user, direct.name) == ("db-1", 5432, "app", "shop")
    assert direct.pgbouncer is None
    assert direct.password.get_secret_value() == PASSWORD


def test_for_database_is_another_database_on_the_same_server(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = read(
        monkeypatch,
        DB_URL=f"postgresql://app:{QUOTED}@pgbouncer:6432/shop?application_name=web",
        DB_PGBOUNCER="transaction",
        DB_DIRECT_URL="postgresql://primary:5432",
        DB_REPLICA_URLS="postgresql://standby-1",
        DB_DATABASES__ANALYTICS__URL="postgresql://warehouse/facts",
        DB_POOL_SIZE="3",
    )
    test = settings.for_database("test_shop")
    # The server itself (not PgBouncer), the same login and options, nothing else of the configuration.
    assert (test.host, test.port, test.name, test.user) == ("primary", 5432, "test_shop", "app")
    assert test.password.get_secret_value() == PASSWORD
    assert (test.application_name, test.pool_size, test.pgbouncer) == ("web", 3, None)
    assert (test.replicas, test.database_names) == ((), ("default",))
    assert "S3cr3t" not in repr(test)
    # The environment is not read again: DB_NAME set now changes nothing.
    monkeypatch.setenv("DB_NAME", "elsewhere")
    assert settings.for_database("test_shop").name == "test_shop"


def test_test_database_names() -> None:
    from db_core import get_connector

    def name(suffix: str = "", **values: str) -> str:
        return get_connector(DatabaseSettings(_env_file=None, **values)).test_database_name(suffix)

    assert name(type="postgres", name="shop") == "test_shop"
    assert name("_gw3", type="mysql", name="shop") == "test_shop_gw3"
    assert name(type="sqlite", name="data/app.db") == "data/test_app.db"
    assert name("_gw0", type="sqlite", name="/srv/app.sqlite3") == "/srv/test_app_gw0.sqlite3"
    assert name(type="sqlite", name=":memory:") == ":memory:"
    # Servers cut names at 63 characters: two long names must stay distinct, and within it.
    long_a, long_b = name("_gw0", type="postgres", name="a" * 70), name("_gw1", type="postgres", name="a" * 70)
    assert long_a != long_b
    assert max(len(long_a), len(long_b)) <= 63
