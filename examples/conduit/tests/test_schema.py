"""The schema: the migrations build exactly what the models declare, on every backend."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from db_core import DatabaseSettings
from db_core.migrations import alembic_config

ALEMBIC_INI = Path(__file__).parents[1] / "alembic.ini"


def test_the_migrations_build_what_the_models_declare(db_setup: DatabaseSettings) -> None:
    # db-pytest built the test database with `upgrade head` (db_migrations in pyproject.toml);
    # `db migrate check` compares it with the models: a model changed without a migration fails here.
    command.check(alembic_config(ALEMBIC_INI))
