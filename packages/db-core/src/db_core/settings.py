"""``DatabaseSettings``: every ``DB_*`` variable, validated where it is read."""

from __future__ import annotations

import builtins
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from db_core.errors import ConfigurationError

__all__ = ["DatabaseSettings", "SSLMode"]

SSLMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]

# The fields that the URL being read supplied, so that an error in one names the URL.
_from_url: ContextVar[set[str] | None] = ContextVar("db_core_settings_from_url", default=None)
# Fields whose value must never be echoed back, not even in an error message.
_SECRET_FIELDS = frozenset({"password", "url"})


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
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
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
    pool_pre_ping: bool = Field(default=True, description="true or false: test each connection before use")
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="seconds to wait while connecting, a positive number"
    )
    echo: bool = Field(default=False, description="true or false: log every SQL statement")
    ssl_mode: SSLMode | None = Field(
        default=None,
        description="one of disable, prefer, require, verify-ca, verify-full (unset: the driver's default)",
    )
    ssl_ca_file: Path | None = Field(default=None, description="a CA bundle file that signs the server certificate")
    ssl_cert_file: Path | None = Field(default=None, description="a client certificate file")
    ssl_key_file: Path | None = Field(default=None, description="the client certificate's private key file")
    sqlite_busy_timeout_seconds: float = Field(
        default=5.0, gt=0, description="seconds a SQLite writer waits for the lock, a positive number"
    )
    application_name: str | None = Field(
        default=None, description="a name the server shows for this application's connections"
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description='extra driver options for the URL query, as JSON such as {"key": "value"}',
    )

    def __init__(self, **values: Any) -> None:
        token = _from_url.set(set())
        try:
            super().__init__(**values)
        except ValidationError as exc:
            error = _configuration_error(exc)
        except SettingsError as exc:
            # A source could not even parse a value (DB_OPTIONS that is not JSON).
            error = _source_error(exc)
        else:
            return
        finally:
            _from_url.reset(token)
        # Raised outside the except block: pydantic's error repeats the raw input, secrets
        # included, and must not ride along as __context__.
        raise error

    @classmethod
    def from_env(cls) -> DatabaseSettings:
        """Read the settings from the environment and ``.env`` (the seed's name for ``DatabaseSettings()``)."""
        return cls()

    @field_validator("type")
    @classmethod
    def _normalise_type(cls, value: str | None) -> str | None:
        return value.strip().lower() or None if value is not None else None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_url(value.get_secret_value())
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
        return tuple(
            _URLExpandingSource(settings_cls, source)
            for source in (init_settings, env_settings, dotenv_settings, file_secret_settings)
        )


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
        data = dict(self._inner())
        raw = next((data[k] for k in _URL_KEYS if data.get(k) is not None), None)
        if raw is None:
            return data
        try:
            url = _parse_url(raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw))
        except ValueError:
            return data  # the field validator reports it, naming DB_URL
        query = {key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()}
        parts: dict[str, Any] = {
            "type": url.get_backend_name(),
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
        seen = _from_url.get()
        if seen is not None:
            seen.update(derived)
        data.update(derived)
        return data


_URL_KEYS = ("DB_URL", "url", "DATABASE_URL", "db_url", "database_url")
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
        return make_url(raw)
    except (ArgumentError, ValueError):
        raise ValueError("not a database URL; expected the form scheme://user:password@host:port/name") from None


def _variable(field: str) -> str:
    return "DB_URL (or DATABASE_URL)" if field == "url" else f"DB_{field.upper()}"


def _source_error(exc: SettingsError) -> ConfigurationError:
    match = re.search(r'field "(\w+)"', str(exc))
    field = match.group(1) if match else "options"
    info = DatabaseSettings.model_fields.get(field)
    fix = f" Set {_variable(field)} to {info.description}." if info is not None and info.description else ""
    return ConfigurationError(f"invalid database settings:\n  {_variable(field)} could not be read: {exc}.{fix}")


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    from_url = _from_url.get() or set()
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
