"""``PsycopgSettings``: the ``DB_PSYCOPG_*`` variables, which only this connector reads."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from db_core import ConfigurationError

__all__ = ["PREPARE_THRESHOLD_FIX", "PsycopgSettings", "parse_prepare_threshold"]

PREPARE_THRESHOLD_FIX = (
    "a whole number of executions, 0 or more, after which psycopg prepares a statement on the server "
    "(0: at once), or none to never prepare (needed behind PgBouncer in transaction mode before 1.21)"
)
"""What a prepare threshold may be, for error messages."""


def parse_prepare_threshold(value: object) -> int | None:
    """A prepare threshold from text or a number: ``"none"`` or ``""`` (any case) is ``None``, never prepare.

    Raises :class:`ValueError` saying what is wrong with anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):  # a bool is an int to Python, not a number of executions
        raise ValueError("it is not a whole number")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none"):
            return None
        if not text.lstrip("+-").isdigit():
            raise ValueError("it is neither a whole number nor none")
        value = int(text)
    if not isinstance(value, int):
        raise ValueError("it is neither a whole number nor none")
    if value < 0:
        raise ValueError("it is negative")
    return value


class PsycopgSettings(BaseSettings):
    """This connector's own settings, read from ``DB_PSYCOPG_*`` variables (any case) and ``.env``.

    Kept apart from :class:`~db_core.DatabaseSettings`, whose fields every
    connector shares. An invalid value raises
    :class:`~db_core.ConfigurationError` naming the variable, the value and the fix.
    """

    model_config = SettingsConfigDict(
        env_prefix="DB_PSYCOPG_",
        case_sensitive=False,
        env_file=".env",
        env_file_encoding="utf-8",
        # An empty value means "never prepare", so it must reach the validator.
        env_ignore_empty=False,
        extra="ignore",
        frozen=True,
    )

    prepare_threshold: int | None = Field(
        default=5,
        description="executions of a statement after which psycopg prepares it on the server; "
        "none never prepares (unset: psycopg's default, 5)",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            error = _configuration_error(exc)
        except SettingsError as exc:
            error = ConfigurationError(f"invalid psycopg settings: {exc}")
        except UnicodeDecodeError as exc:
            error = ConfigurationError(
                f"invalid psycopg settings: the env file could not be read: it is not UTF-8 text "
                f"({exc.reason} at byte {exc.start}). Save it as UTF-8."
            )
        else:
            return
        # Raised outside the except block, so pydantic's error does not ride along as context.
        raise error

    @field_validator("prepare_threshold", mode="before")
    @classmethod
    def _parse_prepare_threshold(cls, value: Any) -> int | None:
        return parse_prepare_threshold(value)

    @property
    def prepare_threshold_given(self) -> bool:
        """Whether ``DB_PSYCOPG_PREPARE_THRESHOLD`` (or an argument) set the threshold, rather than the default."""
        return "prepare_threshold" in self.model_fields_set


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    lines = []
    for error in exc.errors(include_url=False, include_input=True):
        field = str(error["loc"][0]).lower() if error["loc"] else "prepare_threshold"
        message = error["msg"].removeprefix("Value error, ")
        fix = PREPARE_THRESHOLD_FIX if field == "prepare_threshold" else "a valid value"
        lines.append(f"DB_PSYCOPG_{field.upper()}={error.get('input')!r} is invalid: {message}. Set it to {fix}.")
    return ConfigurationError("invalid psycopg settings:\n  " + "\n  ".join(lines))
