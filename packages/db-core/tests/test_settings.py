"""DatabaseSettings: DB_* variables, DB_URL / DATABASE_URL, .env, defaults (done means 2 and 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_core import ConfigurationError, DatabaseSettings, get_connector


def test_defaults_follow_the_seed() -> None:
    s = DatabaseSettings(_env_file=None)
    assert (s.host, s.user, s.pool_size, s.max_overflow) == ("localhost", "app", None, None)
    assert (s.pool_timeout_seconds, s.pool_recycle_seconds) == (30, 1800)
    assert s.password.get_secret_value() == ""


def test_reads_db_variables_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("db_host", "db.internal")
    monkeypatch.setenv("DB_PORT", "6543")
    monkeypatch.setenv("Db_Pool_Size", "3")
    s = DatabaseSettings(_env_file=None)
    assert (s.host, s.port, s.pool_size) == ("db.internal", 6543, 3)


@pytest.mark.parametrize("value", ["POSTGRES", "postgresql", "pg", " Postgres "])
def test_type_spellings_resolve_to_postgres(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DB_TYPE", value)
    assert get_connector(DatabaseSettings(_env_file=None)).name == "postgres"


def test_mysql_without_port_uses_3306(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_TYPE", "mysql")
    connector = get_connector(DatabaseSettings(_env_file=None))
    assert connector.url.port == 3306
    monkeypatch.setenv("DB_TYPE", "mariadb")
    assert get_connector(DatabaseSettings(_env_file=None)).url.port == 3306


def test_postgres_without_port_uses_5432() -> None:
    assert get_connector(DatabaseSettings(type="postgres", _env_file=None)).url.port == 5432


def test_sqlite_default_name_is_app_db_in_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    connector = get_connector(DatabaseSettings(type="sqlite", _env_file=None))
    assert connector.url.database == str(tmp_path / "app.db")


def test_db_url_overrides_parts_and_selects_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "ignored")
    monkeypatch.setenv("DB_URL", "mysql://bob:p%40ss@db.example:3307/shop?ssl_mode=REQUIRED")
    s = DatabaseSettings(_env_file=None)
    assert (s.type, s.host, s.port, s.name, s.user) == ("mysql", "db.example", 3307, "shop", "bob")
    assert s.password.get_secret_value() == "p@ss"
    url = get_connector(s).url
    assert url.drivername == "mysql+aiomysql"
    assert url.query["ssl_mode"] == "REQUIRED"


def test_database_url_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/d")
    s = DatabaseSettings(_env_file=None)
    assert (s.type, s.host, s.name, s.user) == ("postgres", "h", "d", "u")
    monkeypatch.setenv("DB_URL", "sqlite:///x.db")
    assert DatabaseSettings(_env_file=None).type == "sqlite"


def test_db_type_beside_a_url_picks_the_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    # A platform's URL says "postgres"; DB_TYPE says which connector speaks it.
    monkeypatch.setenv("DATABASE_URL", "postgres://u:pw@h:6432/d")
    monkeypatch.setenv("DB_TYPE", "psycopg")
    s = DatabaseSettings(_env_file=None)
    assert (s.type, s.host, s.port, s.name, s.user) == ("psycopg", "h", 6432, "d", "u")
    s = DatabaseSettings(type="sqlite", url="mysql://u@h/d", _env_file=None)
    assert s.type == "sqlite"


def test_url_scheme_keeps_its_driver_for_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_URL", "postgresql+psycopg2://u@h/d")
    s = DatabaseSettings(_env_file=None)
    assert s.type == "postgresql+psycopg2"
    # No connector is called psycopg2: the dialect's connector, with its own async driver.
    assert get_connector(s).url.drivername == "postgresql+asyncpg"


def test_url_sslmode_becomes_ssl_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_URL", "postgresql://u@h/d?sslmode=require")
    s = DatabaseSettings(_env_file=None)
    assert s.ssl_mode == "require"
    assert "sslmode" not in get_connector(s).url.query


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DB_TYPE=mysql\nDB_NAME=from_dotenv\nOTHER_APP_SETTING=1\n")
    monkeypatch.chdir(tmp_path)
    s = DatabaseSettings()
    assert (s.type, s.name) == ("mysql", "from_dotenv")
    monkeypatch.setenv("DB_NAME", "from_env")
    assert DatabaseSettings().name == "from_env"


def test_settings_are_immutable() -> None:
    s = DatabaseSettings(_env_file=None)
    with pytest.raises(ValueError, match="frozen"):
        s.host = "other"  # type: ignore[misc]


def test_from_env_is_the_seed_spelling(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_NAME", "seed")
    assert DatabaseSettings.from_env().name == "seed"


def test_pool_defaults_come_from_the_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    postgres = get_connector(DatabaseSettings(type="postgres", _env_file=None)).get_engine_args()
    assert (postgres["pool_size"], postgres["max_overflow"]) == (10, 20)
    sqlite = get_connector(DatabaseSettings(type="sqlite", _env_file=None)).get_engine_args()
    assert (sqlite["pool_size"], sqlite["max_overflow"]) == (1, 0)
    monkeypatch.setenv("DB_POOL_SIZE", "4")
    monkeypatch.setenv("DB_MAX_OVERFLOW", "2")
    explicit = get_connector(DatabaseSettings(type="sqlite", _env_file=None)).get_engine_args()
    assert (explicit["pool_size"], explicit["max_overflow"], explicit["pool_timeout"]) == (4, 2, 30)


def test_arguments_beat_a_url_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # configure(DatabaseSettings(...)) must mean what it says, whatever the shell exports.
    monkeypatch.setenv("DATABASE_URL", "postgresql://prod:secret@prod-db.example/app")
    s = DatabaseSettings(type="sqlite", name=":memory:", _env_file=None)
    assert (s.type, s.name) == ("sqlite", ":memory:")
    assert get_connector(s).name == "sqlite"


def test_a_url_argument_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "from-env")
    s = DatabaseSettings(url="mysql://u@from-url/d", _env_file=None)
    assert (s.type, s.host) == ("mysql", "from-url")


def test_real_variables_beat_a_url_in_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://u@dotenv-host/d\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB_HOST", "real-host")
    s = DatabaseSettings()
    assert (get_connector(s).name, s.host, s.name) == ("postgres", "real-host", "d")


@pytest.mark.parametrize(
    ("short", "field"), [("CA", "ssl_ca_file"), ("CERT", "ssl_cert_file"), ("KEY", "ssl_key_file")]
)
def test_tls_files_also_answer_to_the_short_names(monkeypatch: pytest.MonkeyPatch, short: str, field: str) -> None:
    monkeypatch.setenv(f"db_ssl_{short.lower()}", "/short.pem")
    assert str(getattr(DatabaseSettings(_env_file=None), field)) == "/short.pem"
    # The full name wins within one source; an argument beats both.
    monkeypatch.setenv(f"DB_SSL_{short}_FILE", "/full.pem")
    assert str(getattr(DatabaseSettings(_env_file=None), field)) == "/full.pem"
    assert str(getattr(DatabaseSettings(_env_file=None, **{field: "/arg.pem"}), field)) == "/arg.pem"


def test_a_url_argument_beats_an_aliased_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_SSL_CA", "/env.pem")
    s = DatabaseSettings(url="postgresql://u@h/d?sslrootcert=/url.pem", _env_file=None)
    assert str(s.ssl_ca_file) == "/url.pem"


def test_db_url_beats_database_url_in_one_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@fallback/d")
    monkeypatch.setenv("db_url", "mysql://u@preferred/d")
    assert DatabaseSettings(_env_file=None).host == "preferred"


def test_libpq_url_options_become_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DB_URL", "postgresql://u@h/d?application_name=billing&connect_timeout=4&sslrootcert=/ca.pem&keepalives=1"
    )
    s = DatabaseSettings(_env_file=None)
    assert (s.application_name, s.connect_timeout_seconds, str(s.ssl_ca_file)) == ("billing", 4, "/ca.pem")
    assert s.options == {"keepalives": "1"}
    query = get_connector(s).url.query
    assert "application_name" not in query
    assert "connect_timeout" not in query


def test_url_query_options_join_db_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_OPTIONS", '{"a": "1", "b": "old"}')
    monkeypatch.setenv("DB_URL", "postgresql://u@h/d?b=2")
    assert DatabaseSettings(_env_file=None).options == {"a": "1", "b": "2"}


def test_check_ssl_files_whatever_the_mode(tmp_path: Path) -> None:
    # For drivers that read the files themselves: a bad one is named before any connect, mode or not.
    missing = tmp_path / "missing-ca.pem"
    for mode in (None, "disable", "prefer", "verify-full"):
        connector = get_connector(DatabaseSettings(type="postgres", ssl_mode=mode, ssl_ca_file=missing, _env_file=None))
        with pytest.raises(ConfigurationError, match=f"DB_SSL_CA_FILE={str(missing)!r}"):
            connector.check_ssl_files()
    get_connector(DatabaseSettings(type="postgres", _env_file=None)).check_ssl_files()  # no files: nothing to check


def test_mask_password_hides_every_spelling() -> None:
    s = DatabaseSettings(password="p@ss/wörd", _env_file=None)
    text = "login p@ss/wörd failed; url p%40ss%2Fw%C3%B6rd; path p%40ss/w%C3%B6rd"
    assert s.mask_password(text) == "login *** failed; url ***; path ***"
    # Too short to mask without garbling the message: left as it is.
    assert DatabaseSettings(password="a", _env_file=None).mask_password("a cat") == "a cat"


def test_health_timeout_defaults_to_two_seconds_and_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DatabaseSettings(_env_file=None).health_timeout_seconds == 2.0
    monkeypatch.setenv("DB_HEALTH_TIMEOUT_SECONDS", "0.75")
    assert DatabaseSettings(_env_file=None).health_timeout_seconds == 0.75


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_health_timeout_must_be_positive(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DB_HEALTH_TIMEOUT_SECONDS", value)
    with pytest.raises(ConfigurationError, match="DB_HEALTH_TIMEOUT_SECONDS"):
        DatabaseSettings(_env_file=None)
