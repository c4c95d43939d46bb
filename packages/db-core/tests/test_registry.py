"""The connector registry: entry points, aliases, clear errors, register_connector, plugin robustness.

Plugins are real distributions (a ``.dist-info`` with entry points) made in a
directory on ``sys.path`` by :mod:`dbtests.dists`; ``tests/test_packaging.py``
does the same with wheels in a clean virtual environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import pytest

from db_core import (
    API_VERSION,
    AmbiguousConnectorError,
    ConfigurationError,
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

if TYPE_CHECKING:
    from dbtests.dists import SitePackages

pytest_plugins = ["dbtests.dists"]


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
    without = {k: v for k, v in by_name.items() if v[0].value.split(":")[0] != "db_postgres"}
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


def test_connector_for_a_newer_api_says_to_upgrade_db_core() -> None:
    class Future(DBConnector):
        api_version: ClassVar[str] = "2.0"

    expected = r"implements connector API 2\.0, but db-core .* implements 1\.0"
    with pytest.raises(ConnectorLoadError, match=expected) as info:
        register_connector("future", Future)
    assert 'upgrade db-core (pip install -U "db-core")' in str(info.value)


def test_connector_for_an_older_api_says_to_update_it() -> None:
    class Past(DBConnector):
        api_version: ClassVar[str] = "0.3"

    with pytest.raises(ConnectorLoadError, match=r"update the connector class to connector API 1\.0"):
        register_connector("past", Past)


@pytest.mark.parametrize("declared", [API_VERSION, "1", 1])
def test_same_major_version_is_accepted(declared: object) -> None:
    class Same(DBConnector):
        api_version = declared  # type: ignore[assignment]

    register_connector("same", Same)
    try:
        assert resolve_connector("same") is Same
    finally:
        unregister_connector("same")


@pytest.mark.parametrize("declared", ["one", "1.x", None, True])
def test_malformed_api_version_is_refused(declared: object) -> None:
    class Odd(DBConnector):
        api_version = declared  # type: ignore[assignment]

    with pytest.raises(ConnectorLoadError, match=r"is not a version like '1\.0'; fix the connector class"):
        register_connector("odd", Odd)


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


@pytest.mark.parametrize(
    ("db_type", "url"),
    [
        ("sqlite", "mysql://root:S3cret@127.0.0.1:3306/shop"),
        ("postgres", "mariadb://u:S3cret@h/d"),
        ("mysql", "sqlite:///x.db"),
    ],
)
def test_db_type_of_another_backend_than_db_url_is_refused(db_type: str, url: str) -> None:
    # A first-party connector never connects elsewhere than DB_URL says (SQLite would make a file "shop").
    with pytest.raises(ConfigurationError) as caught:
        get_connector(DatabaseSettings(type=db_type, url=url, _env_file=None))
    message = str(caught.value)
    assert f"DB_TYPE={db_type}" in message
    assert "unset DB_TYPE" in message
    assert f"is a {url.split(':')[0]}:// URL" in message
    assert "S3cret" not in message


def test_db_type_and_db_url_of_other_backends_in_the_environment_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_TYPE", "sqlite")
    monkeypatch.setenv("DB_URL", "mysql://root@127.0.0.1:3306/shop")
    with pytest.raises(ConfigurationError, match="DB_TYPE=sqlite names the sqlite connector"):
        get_connector(DatabaseSettings(_env_file=None))
    # An argument overrides the environment's URL as a whole: not a contradiction.
    assert get_connector(DatabaseSettings(type="sqlite", name=":memory:", _env_file=None)).name == "sqlite"


def test_db_type_beside_a_url_of_its_backend_picks_the_connector() -> None:
    connector = get_connector(DatabaseSettings(type="mysql", url="mariadb://u@h/d", _env_file=None))
    assert (connector.name, connector.url.database) == ("mysql", "d")
    connector = get_connector(DatabaseSettings(type="pg", url="postgres://u@h/d", _env_file=None))
    assert connector.name == "postgres"


def test_unset_type_says_the_default_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    by_name, infos = registry._discover()
    without = {k: v for k, v in by_name.items() if v[0].value.split(":")[0] != "db_postgres"}
    monkeypatch.setattr(registry, "_discover", lambda: (without, tuple(i for i in infos if i.name != "postgres")))
    monkeypatch.setattr(registry, "_loaded", {})
    with pytest.raises(ConnectorNotFoundError, match=r"DB_TYPE is not set, so the default 'postgres' was tried"):
        get_connector(DatabaseSettings(_env_file=None))


# -- plugins installed as distributions ---------------------------------------------------------------------------

CONNECTOR_MODULE = """
    from db_core import DBConnector

    class Connector(DBConnector):
        name = "{name}"
        drivername = "sqlite+aiosqlite"
        api_version = {api_version!r}
"""


def connector_module(name: str, api_version: object = API_VERSION) -> str:
    return CONNECTOR_MODULE.format(name=name, api_version=api_version)


@pytest.mark.parametrize(
    ("declared", "fix"),
    [
        ("2.0", 'upgrade db-core (pip install -U "db-core")'),
        ("1.1", 'upgrade db-core (pip install -U "db-core")'),
        ("0.9", 'upgrade db-aged-connector (pip install -U "db-aged-connector") to a release for connector API 1.0'),
    ],
)
def test_incompatible_plugin_names_the_package_to_upgrade(site_packages: SitePackages, declared: str, fix: str) -> None:
    site_packages.install(
        "db-aged-connector", "3.2.1", {"aged": "db_aged:Connector"}, {"db_aged": connector_module("aged", declared)}
    )
    with pytest.raises(ConnectorLoadError) as info:
        resolve_connector("aged")
    assert str(info.value) == (
        f"connector 'aged' from db-aged-connector 3.2.1 could not be loaded: it implements connector API "
        f"{declared}, but db-core {registry.__version__} implements {API_VERSION}: {fix}"
    )
    assert resolve_connector("sqlite").__name__ == "SQLiteConnector"


def test_plugin_that_fails_to_import_breaks_only_itself(site_packages: SitePackages) -> None:
    site_packages.install(
        "db-fragile-connector",
        "0.2.0",
        {"fragile": "db_fragile:Connector"},
        {"db_fragile": "raise RuntimeError('the driver wants libfoo.so.3')"},
    )
    assert "fragile" in {i.name for i in available_connectors()}
    assert "db_fragile" not in sys.modules
    with pytest.raises(ConnectorLoadError) as info:
        get_connector(DatabaseSettings(type="fragile", _env_file=None))
    assert info.value.distribution == "db-fragile-connector 0.2.0"
    assert str(info.value) == (
        "connector 'fragile' from db-fragile-connector 0.2.0 could not be loaded: "
        "RuntimeError: the driver wants libfoo.so.3"
    )
    assert isinstance(info.value, ImportError)
    for name in ("sqlite", "postgres", "mysql"):
        assert get_connector(DatabaseSettings(type=name, _env_file=None)).name == name


def test_two_distributions_claiming_one_name(site_packages: SitePackages) -> None:
    site_packages.install("db-twin-a", "1.0", {"twin": "db_twin_a:Connector"}, {"db_twin_a": connector_module("twin")})
    site_packages.install("db-twin-b", "2.0", {"twin": "db_twin_b:Connector"}, {"db_twin_b": connector_module("twin")})
    with pytest.raises(AmbiguousConnectorError) as info:
        get_connector(DatabaseSettings(type="TWIN", _env_file=None))
    assert str(info.value) == (
        "DB_TYPE='twin' is claimed by 2 installed distributions: db-twin-a 1.0 (db_twin_a:Connector) and "
        "db-twin-b 2.0 (db_twin_b:Connector). Uninstall all but one of them, or pick one in code with "
        "db_core.register_connector('twin', <the connector class>)"
    )
    assert isinstance(info.value, LookupError)
    # Both are listed, each loads on its own, other backends are untouched.
    twins = [i for i in available_connectors() if i.name == "twin"]
    assert [i.origin for i in twins] == ["db-twin-a 1.0", "db-twin-b 2.0"]
    assert [i.load().__module__ for i in twins] == ["db_twin_a", "db_twin_b"]
    assert resolve_connector("sqlite").__name__ == "SQLiteConnector"
    # Registering one in code settles the ambiguity.
    chosen = twins[1].load()
    register_connector("twin", chosen)
    try:
        assert resolve_connector("twin") is chosen
    finally:
        unregister_connector("twin")


def test_a_scheme_driver_names_an_installed_connector(site_packages: SitePackages) -> None:
    site_packages.install(
        "db-fastpg", "1.0", {"fastpg": "db_fastpg:Connector"}, {"db_fastpg": connector_module("fastpg")}
    )
    assert resolve_connector("postgresql+fastpg").__module__ == "db_fastpg"
    assert get_connector(DatabaseSettings(url="postgresql+fastpg://u@h/d", _env_file=None)).name == "fastpg"
    for scheme in ("postgresql+asyncpg", "postgresql+psycopg2", "postgres", "postgresql"):
        assert resolve_connector(scheme).__name__ == "PostgresConnector", scheme
    assert resolve_connector("mysql+pymysql").__name__ == "MySQLConnector"


# -- import cost and discovery --------------------------------------------------------------------------------------

PROBE = """
    import importlib.metadata, json, sys, time

    scans = []
    real = importlib.metadata.entry_points

    def counting(**kwargs):
        # Only our group: pydantic scans its own ("pydantic") when its first model is built.
        if kwargs.get("group", "db_core.connectors") == "db_core.connectors":
            scans.append(kwargs)
        return real(**kwargs)

    importlib.metadata.entry_points = counting
    import db_core

    at_import = list(sys.modules)
    scans_at_import = len(scans)
    for name in ("sqlite", "pg", "postgres", "mariadb", "sqlite"):
        db_core.resolve_connector(name)
    db_core.available_connectors()
    print(json.dumps({"at_import": at_import, "scans_at_import": scans_at_import, "scans": len(scans)}))
"""

NEVER_AT_IMPORT = {
    "asyncpg",
    "aiomysql",
    "pymysql",
    "aiosqlite",
    "psycopg",
    "fastapi",
    "starlette",
    "uvicorn",
    "pkg_resources",
    "db_postgres",
    "db_mysql",
    "db_sqlite",
    "db_fastapi",
}


def test_import_db_core_imports_no_backend_and_scans_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    imported = {name.partition(".")[0] for name in probe["at_import"]}
    assert imported & NEVER_AT_IMPORT == set()
    assert probe["scans_at_import"] == 0
    # Five resolutions (aliases included) and a listing: one scan of the entry points in all.
    assert probe["scans"] == 1


def test_an_unrelated_project_with_our_name_is_pointed_out(site_packages: SitePackages) -> None:
    # The package index's db-mysql 0.1.2 is another project: installed, it takes our db-mysql's place
    # (one distribution per name) and registers no connector.
    site_packages.install("db-mysql", "0.1.2", {}, {})
    with pytest.raises(ConnectorNotFoundError) as info:
        resolve_connector("mariadb")
    message = str(info.value)
    assert "pip uninstall db-mysql, then install db_core's db-mysql" in message
    assert "the installed db-mysql 0.1.2 registers no db_core connector" in message
    assert "install the connector's wheel by its file name" in message
