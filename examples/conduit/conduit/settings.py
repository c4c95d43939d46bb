"""The application's own settings (``CONDUIT_*``); the database's are db's ``DB_*``."""

from __future__ import annotations

import logging
import secrets
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger("conduit")


class ConduitSettings(BaseSettings):
    """Read from the environment (and ``.env``), as db reads ``DB_*``."""

    model_config = SettingsConfigDict(env_prefix="CONDUIT_", env_file=".env", extra="ignore")

    secret_key: SecretStr | None = Field(
        default=None, description="signs the tokens (HS256): 32 bytes or more, the same in every worker"
    )
    token_lifetime_seconds: int = Field(default=7 * 24 * 3600, gt=0)

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError(
                "CONDUIT_SECRET_KEY is shorter than 32 bytes: make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value


@lru_cache
def get_settings() -> ConduitSettings:
    """The settings, read once."""
    return ConduitSettings()


@lru_cache
def secret_key() -> str:
    """``CONDUIT_SECRET_KEY``; without it a key of this process only (its tokens die with it: a demo's)."""
    key = get_settings().secret_key
    if key is None:
        logger.warning("CONDUIT_SECRET_KEY is not set: tokens are signed with a random key and die with this process")
        return secrets.token_urlsafe(32)
    return key.get_secret_value()
