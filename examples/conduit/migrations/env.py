"""Alembic's environment, run by `db migrate` (see README beside it).

The database is the application's: db_core's DB_* settings (DB_URL, or DB_TYPE, DB_HOST, DB_NAME,
DB_USER, DB_PASSWORD...). alembic.ini holds no URL, and nothing here needs one.
"""

from conduit.models import Base

from db_core.migrations import run_migrations

# What `db migrate revision --autogenerate` and `db migrate check` compare with the database.
target_metadata = Base.metadata

run_migrations(target_metadata)
