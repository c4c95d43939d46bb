"""``DatabaseSettings``: every ``DB_*`` variable, validated where it is read."""

from __future__ import annotations

import builtins
import json
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from db_core.errors import ConfigurationError, UnknownDatabaseError

__all__ = ["DEFAULT_DATABASE", "DatabaseSettings", "PgBouncerMode", "ReplicaFallback", "SSLMode"]

SSLMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
ReplicaFallback = Literal["primary", "error"]
PgBouncerMode = Literal["session", "transaction"]

DEFAULT_DATABASE = "default"
"""The name of the database the plain ``DB_*`` variables configure."""

# The most seconds a signed 32-bit count of milliseconds holds: PostgreSQL's statement_timeout
# refuses more (at connect), and SQLite's busy timeout silently turns more into "do not wait".
_MAX_MILLISECOND_SECONDS = 2_147_483


class _Reading:
    """What the sources of one ``DatabaseSettings(...)`` gave, for its error message."""

    def __init__(self) -> None:
        # Every field a source gave, the sources read from the highest priority down.
        self.given: set[str] = set()
        # The fields whose value came out of a URL.
        self.from_url: set[str] = set()
        # Whether the URL in effect came with a DB_TYPE beside it, from the same source.
        self.type_beside_url = False


@dataclass(frozen=True)
class _Scope:
    """Where the settings being read come from: the ``DB_*`` variables, or a replica's or named database's."""

    prefix: str = "DB_"
    url_variable: str = "DB_URL (or DATABASE_URL)"
    # Derived settings take only the values given to them, never the environment's again.
    arguments_only: bool = False


_reading: ContextVar[_Reading | None] = ContextVar("db_core_settings_reading", default=None)
_ENVIRONMENT = _Scope()
_scope: ContextVar[_Scope] = ContextVar("db_core_settings_scope", default=_ENVIRONMENT)
# Fields whose value must never be echoed back, not even in an error message.
_SECRET_FIELDS = frozenset({"password", "url", "replica_urls", "direct_url", "databases"})
# A database name: what the DB_DATABASES__<NAME>__ variables can spell, lower-cased.
_DATABASE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


class DatabaseSettings(BaseSettings):
    """Connection and pool settings, read from ``DB_*`` variables and ``.env``.

    Every field is read from the variable ``DB_<FIELD>`` (any case); ``url``
    is read from ``DB_URL`` or, failing that, ``DATABASE_URL``. A full URL
    overrides the parts it contains, and its scheme selects the backend.
    Invalid values raise :class:`~db_core.errors.ConfigurationError` naming the
    variable. Instances are immutable; secrets are :class:`pydantic.SecretStr`.
    """

    model_config = SettingsConfigDict(
        env_prefix="DB_",
        case_sensitive=False,
        # DB_DATABASES__ANALYTICS__URL: a named database's settings, nested.
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        # "inf" and "nan" parse as floats; no timeout or size means them.
        allow_inf_nan=False,
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    type: str | None = Field(
        default=None,
        description="the backend: postgres, mysql, sqlite or a plugin's name "
        "(unset: DB_URL's scheme, else the only installed connector, else postgres)",
    )
    url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DB_URL", "DATABASE_URL"),
        description="a full URL such as postgresql://user:password@host:5432/name; it overrides the parts",
    )
    host: str = Field(default="localhost", min_length=1, description="the server's host name or address")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="a TCP port from 1 to 65535 (unset: the backend's default, 5432 or 3306)",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        description="the database name, or for SQLite a file path or :memory: (unset: app, or app.db on SQLite)",
    )
    user: str | None = Field(default="app", description="the user name to log in as")
    password: SecretStr = Field(default=SecretStr(""), description="the password (never shown)")
    pool_size: int | None = Field(
        default=None,
        ge=1,
        description="a whole number of pooled connections, at least 1 (unset: the backend's default, 10; 1 on SQLite)",
    )
    max_overflow: int | None = Field(
        default=None,
        ge=0,
        description="a whole number of extra connections above pool_size, 0 or more "
        "(unset: the backend's default, 20; 0 on SQLite)",
    )
    pool_timeout_seconds: float = Field(
        default=30.0, gt=0, description="seconds to wait for a free connection, a positive number"
    )
    pool_recycle_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="seconds after which a pooled connection is replaced, a positive number "
        "(keep it below the server's idle timeout)",
    )
    pool_pre_ping: bool = Field(
        default=True,
        description="true or false: replace a dead pooled connection before handing it out "
        "(see pool_pre_ping_idle_seconds)",
    )
    pool_pre_ping_idle_seconds: float = Field(
        default=10.0,
        ge=0,
        description="seconds a pooled connection may sit idle before pre-ping asks the server whether "
        "it is alive, 0 or more (0: at every checkout)",
    )
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="seconds to wait while connecting, a positive number"
    )
    health_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="seconds a health check (db_core.health(), the readiness route) may take before it reports "
        "the database unavailable, a positive number",
    )
    statement_timeout_seconds: float | None = Field(
        default=None,
        # MariaDB rounds below a millisecond to 0, which means no limit at all.
        ge=0.001,
        le=_MAX_MILLISECOND_SECONDS,
        description="seconds after which the server stops a running statement, from 0.001 to 2147483 (unset: no limit)",
    )
    echo: bool = Field(default=False, description="true or false: log every SQL statement")
    ssl_mode: SSLMode | None = Field(
        default=None,
        description="one of disable, prefer, require, verify-ca, verify-full (unset: the driver's default)",
    )
    # DB_SSL_CA/DB_SSL_CERT/DB_SSL_KEY: the short names other tools use are accepted too.
    ssl_ca_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("DB_SSL_CA_FILE", "DB_SSL_CA"),
        description="a CA bundle file that signs the server certificate",
    )
    ssl_cert_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("DB_SSL_CERT_FILE", "DB_SSL_CERT"),
        description="a client certificate file",
    )
    ssl_key_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("DB_SSL_KEY_FILE", "DB_SSL_KEY"),
        description="the client certificate's private key file",
    )
    sqlite_busy_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=_MAX_MILLISECOND_SECONDS,
        description="seconds a SQLite writer waits for the lock, a positive number up to 2147483",
    )
    application_name: str | None = Field(
        default=None, description="a name the server shows for this application's connections"
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description='extra driver options for the URL query, as JSON such as {"key": "value"}',
    )
    pgbouncer: PgBouncerMode | None = Field(
        default=None,
        description="the PgBouncer pool mode of the server DB_URL points at: transaction (no prepared statements "
        "kept, per-transaction settings with SET LOCAL) or session (unset: no PgBouncer)",
    )
    direct_url: SecretStr | None = Field(
        default=None,
        description="a URL of the PostgreSQL server itself, for session-level work behind PgBouncer (migrations, "
        "advisory locks); a part it leaves out (user, password, database) is DB_URL's",
    )
    replica_urls: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="URLs of read replicas, separated by commas (or a JSON list); a part a URL leaves out "
        "(user, password, port, database) is the primary's",
    )
    replica_max_lag_seconds: float = Field(
        default=10.0,
        gt=0,
        description="seconds a replica may lag behind the primary before it leaves the rotation, a positive number",
    )
    replica_check_interval_seconds: float = Field(
        default=2.0, gt=0, description="seconds between two checks of each replica's health and lag, a positive number"
    )
    read_your_writes_seconds: float = Field(
        default=10.0,
        ge=0,
        description="seconds after a task commits a read-write unit of work during which its read-only units "
        "read from the primary, 0 or more (0: never)",
    )
    replica_fallback: ReplicaFallback = Field(
        default="primary",
        description="what a read-only unit of work does when no replica is usable: "
        "primary (read from the primary) or error (raise NoReplicaAvailableError)",
    )
    databases: dict[str, Any] = Field(
        default_factory=dict,
        description="named databases, each with settings of its own, "
        "e.g. DB_DATABASES__ANALYTICS__URL=postgresql://host/analytics",
    )
    """Named databases: once validated, each name (lower case) maps to its :class:`DatabaseSettings`."""

    _replicas: tuple[DatabaseSettings, ...] = PrivateAttr(default=())
    _type_beside_url: bool = PrivateAttr(default=False)
    _direct: DatabaseSettings | None = PrivateAttr(default=None)

    def __init__(self, **values: Any) -> None:
        reading = _Reading()
        token = _reading.set(reading)
        error: ConfigurationError | None
        try:
            super().__init__(**values)
        except ValidationError as exc:
            error = _configuration_error(exc)
        except SettingsError as exc:
            # A source could not even parse a value (DB_OPTIONS that is not JSON).
            error = _source_error(exc)
        except RecursionError:
            # json.loads gives up on DB_OPTIONS nested thousands deep with this, not a ValueError.
            error = _unreadable("options", "its JSON is nested too deeply")
        except UnicodeDecodeError as exc:
            # Only an env file is decoded here; the environment's undecodable bytes arrive as
            # surrogates, which _check_text refuses.
            error = _env_file_error(values, exc)
        else:
            error = None
        finally:
            _reading.reset(token)
        if error is not None:
            # Raised outside the except block: pydantic's error repeats the raw input, secrets
            # included, and must not ride along as __context__.
            raise error
        self._type_beside_url = reading.type_beside_url
        self._replicas = tuple(
            self._derived(url, f"REPLICA_URLS (replica {index})") for index, url in enumerate(self.replica_urls, 1)
        )
        if self.direct_url is not None:
            self._direct = self._derived(self.direct_url, "DIRECT_URL", pgbouncer=None)
        named = {name.lower(): self._named_database(name.lower(), values) for name, values in self.databases.items()}
        # The raw values may hold passwords; validated settings mask them wherever they are shown.
        object.__setattr__(self, "databases", named)

    @property
    def replicas(self) -> tuple[DatabaseSettings, ...]:
        """The settings of each read replica (``DB_REPLICA_URLS``), in order."""
        return self._replicas

    @property
    def direct(self) -> DatabaseSettings:
        """The settings for session-level work: ``DB_DIRECT_URL``'s server, bypassing PgBouncer; else these."""
        return self._direct if self._direct is not None else self

    @property
    def database_names(self) -> tuple[str, ...]:
        """``"default"`` (the ``DB_*`` database), then every named database (``DB_DATABASES__<NAME>__*``)."""
        return (DEFAULT_DATABASE, *self.databases)

    def database(self, name: str | None = None) -> DatabaseSettings:
        """The settings of database ``name``: these for ``None`` or ``"default"``, else a named database's.

        An unknown name raises :class:`~db_core.errors.UnknownDatabaseError`,
        which lists the configured names.
        """
        if name is None or name == DEFAULT_DATABASE:
            return self
        named = self.databases.get(name.lower())
        if not isinstance(named, DatabaseSettings):
            raise UnknownDatabaseError(name, self.database_names)
        return named

    @property
    def type_beside_url(self) -> bool:
        """Whether ``type`` was given beside ``url`` (the same source: both variables, or both arguments).

        Then ``type`` picks the connector for the URL; one that lists its
        :attr:`~db_core.DBConnector.url_schemes` refuses a URL of another backend.
        """
        return self._type_beside_url

    def for_database(self, name: str) -> DatabaseSettings:
        """These settings for another database ``name`` on the same server (for SQLite, another file).

        Without replicas or named databases; behind PgBouncer, on the server
        itself when ``DB_DIRECT_URL`` is set. The pytest plugin runs tests on
        ``settings.for_database(<test database>)``.
        """
        values = self.direct.model_dump(exclude={"url", "replica_urls", "direct_url", "databases"})
        return _derive(_Scope(prefix=_scope.get().prefix, arguments_only=True), {**values, "name": name})

    def _derived(self, url: SecretStr, variable: str, **overrides: Any) -> DatabaseSettings:
        """Another server of this database: these settings, with the parts its URL gives replaced."""
        inherited = self.model_dump(exclude={"url", "replica_urls", "direct_url", "databases"})
        scope = _Scope(url_variable=f"{_scope.get().prefix}{variable}", arguments_only=True)
        return _derive(scope, {**inherited, **overrides, "url": url})

    def _named_database(self, name: str, values: Any) -> DatabaseSettings:
        if isinstance(values, DatabaseSettings):
            return values
        prefix = f"DB_DATABASES__{name.upper()}__"
        if not _DATABASE_NAME.match(name) or name == DEFAULT_DATABASE:
            raise ConfigurationError(
                f"invalid database settings:\n  {prefix}*: {name!r} cannot name a database: use letters, digits "
                f"and _, starting with a letter, other than {DEFAULT_DATABASE!r} (the DB_* database itself)"
            )
        if not isinstance(values, dict):
            raise ConfigurationError(
                f"invalid database settings:\n  DB_DATABASES={{{name!r}: ...}} must map each name to its settings, "
                f"such as {prefix}URL=postgresql://host/{name}"
            )
        if "databases" in {key.lower() for key in values}:
            raise ConfigurationError(f"invalid database settings:\n  {prefix}DATABASES: a named database has none")
        scope = _Scope(prefix=prefix, url_variable=f"{prefix}URL", arguments_only=True)
        return _derive(scope, values)

    @classmethod
    def from_env(cls) -> DatabaseSettings:
        """Read the settings from the environment and ``.env`` (the seed's name for ``DatabaseSettings()``)."""
        return cls()

    def mask_password(self, text: str) -> str:
        """``text`` with the password, as it is or URL-quoted, replaced by ``***``.

        For messages built from a driver's own words, which may quote it. A
        password shorter than 4 characters is left alone: masking it would
        garble ordinary words.
        """
        password = self.password.get_secret_value()
        if len(password) < 4:
            return text
        for form in sorted({password, quote(password, safe=""), quote(password)}, key=len, reverse=True):
            text = text.replace(form, "***")
        return text

    @field_validator("*", mode="before")
    @classmethod
    def _check_text(cls, value: Any) -> Any:
        """Refuse text that no server, driver or file system call can take: a NUL, or bytes that are not UTF-8."""
        for text in _texts(value):
            if "\x00" in text:
                raise ValueError("it contains a NUL character")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "it is not UTF-8 text (it holds bytes that are not UTF-8, e.g. from a latin-1 file or terminal)"
                ) from None
        return value

    @field_validator("type")
    @classmethod
    def _normalise_type(cls, value: str | None) -> str | None:
        return value.strip().lower() or None if value is not None else None

    @field_validator("url", "direct_url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_url(value.get_secret_value())
        return value

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _split_replica_urls(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("it starts with [ but is not a JSON list of URLs") from None
            return [url.strip() for url in text.split(",") if url.strip()]
        return value

    @field_validator("replica_urls")
    @classmethod
    def _check_replica_urls(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for index, url in enumerate(value, 1):
            try:
                _parse_url(url.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"replica {index}: {exc}") from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: builtins.type[BaseSettings],  # the field "type" shadows the builtin here
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Expand a URL within the source that gave it: arguments beat the environment, which beats ``.env``."""
        if _scope.get().arguments_only:
            return (_URLExpandingSource(settings_cls, init_settings),)
        return tuple(
            _URLExpandingSource(settings_cls, source)
            for source in (init_settings, env_settings, dotenv_settings, file_secret_settings)
        )


def _derive(scope: _Scope, values: dict[str, Any]) -> DatabaseSettings:
    """Settings built from ``values`` alone, whose errors name the variables of ``scope``."""
    token = _scope.set(scope)
    try:
        return DatabaseSettings(**values)
    finally:
        _scope.reset(token)


class _URLExpandingSource(PydanticBaseSettingsSource):
    """A settings source whose ``DB_URL`` is split into the parts it contains.

    A URL overrides the separate parts *of the same source*, so
    ``DatabaseSettings(name=...)`` still wins over a ``DATABASE_URL`` in the
    environment, and a real ``DB_HOST`` over a URL in ``.env``.
    """

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = _by_field_name(self._inner())
        reading = _reading.get()
        # pydantic-settings reads the sources from the highest priority down: a field an
        # earlier one gave is not this source's to supply.
        given_above = set(reading.given) if reading is not None else set()
        if reading is not None:
            reading.given.update(data)
        raw = data.get("url")
        if raw is None:
            return data
        text = raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw)
        try:
            url = _parse_url(text)
        except ValueError:
            return data  # the field validator reports it, naming DB_URL
        query = {key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()}
        parts: dict[str, Any] = {
            # DB_TYPE beside the URL picks the connector (a URL from the platform says only "postgres");
            # the scheme's driver part, if any, is kept for the registry to match a connector's name.
            "type": None if data.get("type") else url.drivername.lower(),
            "host": url.host,
            "port": url.port,
            "name": url.database,
            "user": url.username,
            "password": url.password,
        }
        # libpq's spellings, which asyncpg would refuse as unknown arguments.
        for option, field in _URL_OPTIONS.items():
            parts[field] = query.pop(option, None)
        if query:
            # The sources have already decoded DB_OPTIONS' JSON (or refused it).
            given = data.get("options")
            parts["options"] = {**(given if isinstance(given, dict) else {}), **query}
        derived = {field: value for field, value in parts.items() if value is not None}
        if reading is not None and data.get("type") and not given_above & {"type", "url"}:
            reading.type_beside_url = True
        if reading is not None:
            reading.from_url.update(derived.keys() - given_above)
            reading.given.update(derived)
        data.update(derived)
        return data


def _by_field_name(data: dict[str, Any]) -> dict[str, Any]:
    """Key every value by its field's name, whichever alias the source found it under.

    Sources report a value under the spelling they found (``DB_URL``,
    ``database_url``, ``DB_SSL_CA``); merged as they are, a lower source's
    alias would beat a higher source's field name. Within one source the
    first alias listed wins (``DB_URL`` over ``DATABASE_URL``).
    """
    out = dict(data)
    for name, info in DatabaseSettings.model_fields.items():
        alias = info.validation_alias
        if not isinstance(alias, AliasChoices):
            continue
        spellings = [str(choice).lower() for choice in alias.choices] + [name]
        found = sorted((spellings.index(key.lower()), key) for key in out if key.lower() in spellings)
        if found:
            value = out[found[0][1]]
            for _rank, key in found:
                del out[key]
            out[name] = value
    return out


_URL_OPTIONS = {
    "sslmode": "ssl_mode",
    "sslrootcert": "ssl_ca_file",
    "sslcert": "ssl_cert_file",
    "sslkey": "ssl_key_file",
    "connect_timeout": "connect_timeout_seconds",
    "application_name": "application_name",
}


def _parse_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ValueError("not a database URL; expected the form scheme://user:password@host:port/name") from None
    # Every "@" must end the user name and password or sit in the user name (Azure's
    # user@server). Another one means the parser split the URL in the wrong place, at an
    # unencoded "@" in the password or after a "/" in the user name, and a piece of the
    # password would become the host, the database or an option, shown wherever they are.
    ends_userinfo = int(url.username is not None or url.password is not None)
    if raw.count("@") > ends_userinfo + (url.username or "").count("@"):
        raise ValueError(
            "an @ in it does not end the user name and password; "
            "percent-encode @ as %40, / as %2F and : as %3A in the user name and password"
        )
    return url


def _variable(field: str) -> str:
    scope = _scope.get()
    return scope.url_variable if field == "url" else f"{scope.prefix}{field.upper()}"


def _source_error(exc: SettingsError) -> ConfigurationError:
    match = re.search(r'field "(\w+)"', str(exc))
    return _unreadable(match.group(1) if match else "options", str(exc))


def _unreadable(field: str, reason: str) -> ConfigurationError:
    info = DatabaseSettings.model_fields.get(field)
    fix = f" Set {_variable(field)} to {info.description}." if info is not None and info.description else ""
    return ConfigurationError(f"invalid database settings:\n  {_variable(field)} could not be read: {reason}.{fix}")


def _env_file_error(values: dict[str, Any], exc: UnicodeDecodeError) -> ConfigurationError:
    """The env file is not text in its encoding; its bytes (a password among them) are not shown."""
    files = values.get("_env_file", DatabaseSettings.model_config.get("env_file"))
    shown = ", ".join(str(f) for f in files) if isinstance(files, (list, tuple)) else str(files)
    encoding = values.get("_env_file_encoding") or DatabaseSettings.model_config.get("env_file_encoding") or "utf-8"
    return ConfigurationError(
        f"invalid database settings:\n  the env file {shown} could not be read: it is not {encoding} text "
        f"({exc.reason} at byte {exc.start}). Save it as {encoding}."
    )


def _texts(value: Any) -> list[str]:
    """The text in a raw field value: a string, a secret, a path, or the keys and values of options."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.items() for part in item for text in _texts(part)]
    return []


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    reading = _reading.get()
    from_url = reading.from_url if reading is not None else set()
    lines = []
    for error in exc.errors(include_url=False, include_input=True):
        loc = error["loc"]
        field = str(loc[0]).lower() if loc else "url"
        field = "url" if field in ("db_url", "database_url") else field
        info = DatabaseSettings.model_fields.get(field)
        shown = "***" if field in _SECRET_FIELDS else repr(error.get("input"))
        message = error["msg"].removeprefix("Value error, ")
        if field in from_url:
            # The bad part came out of the URL: name the URL, never echo it.
            lines.append(f"{_variable('url')}=*** is invalid: its {field} {shown}: {message}.")
            continue
        variable = _variable(field)
        fix = f" Set {variable} to {info.description}." if info is not None and info.description else ""
        lines.append(f"{variable}={shown} is invalid: {message}.{fix}")
    return ConfigurationError("invalid database settings:\n  " + "\n  ".join(lines))
