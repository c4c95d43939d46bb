"""Alembic migrations on the database of the ``DB_*`` settings: ``db migrate`` and ``await upgrade("head")``.

The database is the application's own (:func:`~db_core.get_settings`,
``DB_URL`` or ``DB_TYPE``, ``DB_HOST``...): it reaches Alembic as a connection
of the library's engine, or with ``--sql`` as a dialect name only. The URL is
never written to ``alembic.ini`` nor any other file, never handed to
``configparser`` and never printed.

Alembic is optional (``pip install "db-core[migrations]"``) and imported only
when a function of this module runs: ``import db_core.migrations`` does not
import it.

- ``db migrate init`` (:func:`init`) writes ``alembic.ini`` and a ``migrations/``
  directory whose ``env.py`` calls :func:`run_migrations`.
- :func:`upgrade` and :func:`downgrade` run inside a running event loop (a
  FastAPI lifespan) over one connection of the engine of that loop.
- :func:`alembic_config` makes the ``alembic.config.Config`` for any other
  ``alembic.command`` function.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncConnection

from db_core.engine import get_connector_instance, get_engine
from db_core.errors import MigrationError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "INSTALL_HINT",
    "TEMPLATE_DIRECTORY",
    "MigrationError",
    "alembic_config",
    "downgrade",
    "init",
    "require_alembic",
    "run_migrations",
    "upgrade",
]

INSTALL_HINT = 'alembic is not installed: pip install "db-core[migrations]"'
"""What to do when Alembic is missing."""

TEMPLATE_DIRECTORY = Path(__file__).parent / "migration_template"
"""The files :func:`init` copies into the migrations directory: ``env.py``, ``script.py.mako``, ``README``."""

CONNECTION = "connection"
"""The key of ``Config.attributes`` holding the (sync) connection to migrate over, as in Alembic's cookbook."""

DATABASE = "database"
"""The key of ``Config.attributes`` holding the name of the database (``None``: the ``DB_*`` one)."""

logger = logging.getLogger("db_core.migrations")

_INI = """\
# Alembic's configuration, written by `db migrate init`.
#
# The database is NOT configured in this file: `db migrate` (and db_core.migrations) connect with
# the application's DB_* settings (DB_URL, or DB_TYPE, DB_HOST, DB_PORT, DB_NAME, DB_USER,
# DB_PASSWORD..., and .env), and `db migrate --database NAME` with DB_DATABASES__NAME__*.
# Do not add sqlalchemy.url: it is ignored, and a password does not belong in a file.

[alembic]
# The migration scripts: env.py, script.py.mako and versions/.
script_location = {script_location}
# The working directory goes on sys.path, so env.py can import your models.
prepend_sys_path = .
path_separator = os

# Logging of `db migrate` (the application's own logging is left alone by `await upgrade()`).
[loggers]
keys = root,sqlalchemy,alembic,alembic_plugins

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[logger_alembic_plugins]
level = WARNING
handlers =
qualname = alembic.runtime.plugins

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""


def require_alembic() -> None:
    """Raise :class:`MigrationError` with :data:`INSTALL_HINT` when Alembic cannot be imported."""
    try:
        import alembic  # noqa: F401
    except ImportError:
        raise MigrationError(INSTALL_HINT) from None


def init(directory: str | os.PathLike[str] = "migrations", *, config: str | os.PathLike[str] = "alembic.ini") -> None:
    """Write ``config`` (``alembic.ini``) and the migrations ``directory`` from db_core's template.

    ``directory`` gets ``env.py`` (which calls :func:`run_migrations`; set its
    ``target_metadata`` to your models' metadata), ``script.py.mako``, ``README``
    and an empty ``versions/``. ``alembic.ini`` names the directory relative to
    itself, holds the logging configuration and no URL. Raises
    :class:`MigrationError`, writing nothing, when ``config`` exists or
    ``directory`` exists and is not empty.
    """
    ini, target = Path(config), Path(directory)
    if ini.exists():
        raise MigrationError(
            f"{ini} already exists; db migrate init never overwrites it: remove it, or give another "
            "file with --config PATH"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise MigrationError(
            f"{target} already exists and is not empty; db migrate init never overwrites it: remove it, or "
            "name another directory (db migrate init DIRECTORY)"
        )
    if target.is_absolute():
        location = target.as_posix()
    else:  # relative to alembic.ini, wherever db migrate runs from: Alembic's %(here)s
        location = Path(os.path.relpath(target.resolve(), ini.resolve().parent)).as_posix()
    # configparser reads "%" as interpolation: a "%" of the path is written "%%".
    location = location.replace("%", "%%")
    if not target.is_absolute():
        location = f"%(here)s/{location}"
    (target / "versions").mkdir(parents=True, exist_ok=True)
    for name in ("env.py", "script.py.mako", "README"):
        shutil.copyfile(TEMPLATE_DIRECTORY / name, target / name)
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(_INI.replace("{script_location}", location), encoding="utf-8")


def alembic_config(
    path: str | os.PathLike[str] = "alembic.ini", *, database: str | None = None, stdout: Any = None
) -> Config:
    """The ``alembic.config.Config`` of ``path`` for ``database`` (``None``: the ``DB_*`` one).

    For any ``alembic.command`` function; :func:`run_migrations` reads the
    database from ``config.attributes["database"]``. Nothing about the
    connection is put in the configuration. Raises :class:`MigrationError`
    when ``path`` does not exist (run ``db migrate init``) or Alembic is not
    installed.
    """
    ini = Path(path)
    if not ini.is_file():
        raise MigrationError(
            f"{ini} not found: run `db migrate init` to create it and the migrations directory, "
            "or name an existing one with --config PATH"
        )
    require_alembic()
    from alembic.config import Config

    config = Config(ini, stdout=stdout if stdout is not None else sys.stdout)
    config.attributes[DATABASE] = database
    # has_option() reads no value: a URL there is never interpolated nor shown.
    if config.file_config.has_option(config.config_ini_section, "sqlalchemy.url"):
        logger.warning(
            "%s sets sqlalchemy.url, which is ignored: the database is the one of the DB_* settings. "
            "Remove the line (a password does not belong in a file)",
            ini,
        )
    return config


def run_migrations(
    target_metadata: MetaData | Sequence[MetaData] | None, *, database: str | None = None, **options: Any
) -> None:
    """Run Alembic's migration context on the ``DB_*`` database: call it from ``env.py``.

    ``target_metadata`` is your models' metadata (what ``revision
    --autogenerate`` and ``check`` compare with the database). ``database``
    defaults to ``config.attributes["database"]`` (``db migrate --database``);
    ``options`` go to ``context.configure()`` (``include_object``,
    ``version_table``...). Types are compared (``compare_type=True``) and on
    SQLite ALTER runs in batch mode (``render_as_batch=True``: a copy of the
    table, which keeps its rows).

    - With ``--sql`` (offline), the SQL is printed for the dialect of the
      connector, with literal values: no URL and no connection.
    - With a connection in ``config.attributes["connection"]``, it runs over it
      (what :func:`upgrade` and :func:`downgrade` do).
    - Otherwise (the ``db migrate`` command) it opens a connection of the
      library's engine (``get_engine(database, direct=True)``: the server
      behind PgBouncer when ``DB_DIRECT_URL`` is set) in an event loop of its
      own, commits, and disposes the engine.
    """
    from alembic import context

    config = context.config
    if database is None:
        database = config.attributes.get(DATABASE)
    options = {"target_metadata": target_metadata, "compare_type": True, **options}
    if context.is_offline_mode():
        dialect = get_connector_instance(database).url.get_backend_name()
        options.setdefault("render_as_batch", dialect == "sqlite")
        context.configure(dialect_name=dialect, literal_binds=True, dialect_opts={"paramstyle": "named"}, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get(CONNECTION)
    if isinstance(connection, AsyncConnection):
        raise MigrationError(
            'config.attributes["connection"] must be a sync Connection: set it in a function run by '
            "`await async_connection.run_sync(...)` (or use `await db_core.migrations.upgrade()`)"
        )
    if connection is not None:
        _migrate(connection, options)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_migrate_on_engine(database, options))
        return
    raise MigrationError(
        "an Alembic command ran inside a running event loop without a connection: use "
        '`await db_core.migrations.upgrade("head")` (or downgrade), which migrates over a connection of '
        'this loop\'s engine, or pass one in config.attributes["connection"]'
    )


def _migrate(connection: Connection, options: dict[str, Any]) -> None:
    from alembic import context

    options.setdefault("render_as_batch", connection.dialect.name == "sqlite")
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_on_engine(database: str | None, options: dict[str, Any]) -> None:
    engine = get_engine(database, direct=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate, options)
            await connection.commit()
    finally:
        await engine.dispose()


async def upgrade(
    revision: str = "head", *, config: str | os.PathLike[str] = "alembic.ini", database: str | None = None
) -> None:
    """Upgrade ``database`` (``None``: the ``DB_*`` one) to ``revision``, from inside a running event loop.

    For a FastAPI lifespan or any async start-up: Alembic's ``upgrade`` runs
    over one connection of this loop's engine (``get_engine(database,
    direct=True)``), is committed, and the connection goes back to the pool.
    ``config`` is the ``alembic.ini`` (:class:`MigrationError` when missing);
    Alembic's own errors (``alembic.util.CommandError``: an unknown revision)
    are raised as they are.
    """
    from_config = alembic_config(config, database=database)
    from alembic import command

    await _run_over_one_connection(from_config, database, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(
    revision: str, *, config: str | os.PathLike[str] = "alembic.ini", database: str | None = None
) -> None:
    """Downgrade ``database`` to ``revision`` (``"-1"``, ``"base"``, a revision id); as :func:`upgrade`."""
    from_config = alembic_config(config, database=database)
    from alembic import command

    await _run_over_one_connection(from_config, database, lambda cfg: command.downgrade(cfg, revision))


async def _run_over_one_connection(config: Config, database: str | None, run: Callable[[Config], None]) -> None:
    def in_greenlet(connection: Connection) -> None:
        config.attributes[CONNECTION] = connection
        try:
            run(config)
        finally:
            del config.attributes[CONNECTION]

    async with get_engine(database, direct=True).connect() as connection:
        await connection.run_sync(in_greenlet)
        await connection.commit()
