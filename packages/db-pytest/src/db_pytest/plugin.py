"""The pytest plugin: one test database per run, and every test rolled back.

pytest-django's model. As soon as pytest starts, every database access of the
run is pointed at a test database whose name is derived from the configured
one (``test_<name>``, plus ``_gw<N>`` under pytest-xdist), so the configured
database is never touched. That database is created by the first test that
asks for it (:func:`db_setup`), replacing a leftover of a killed run, given
the schema (``db_metadata``), and dropped at the end unless ``--db-reuse``.
Each test using :func:`db_session` runs inside one transaction that is rolled
back afterwards, whatever the code under test commits.

The fixtures are async fixtures of pytest-asyncio, declared without a loop
scope: they run on the loop of ``asyncio_default_fixture_loop_scope``, which
must be the tests' loop (``asyncio_default_test_loop_scope``), in strict and
auto mode alike.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from db_core import DatabaseSettings, DBConnector

_T = TypeVar("_T")


@dataclass
class _TestDatabase:
    """One database of the run: its name in the configuration, and its test copy's connector."""

    name: str
    connector: DBConnector
    metadata: str | None
    migrations: Path | None
    created: bool = False


@dataclass
class _Run:
    """The run's test databases, made from the ``DB_*`` settings when pytest starts."""

    settings: DatabaseSettings | None = None
    error: Exception | None = None
    databases: list[_TestDatabase] = field(default_factory=list)
    reuse: bool = False
    recreate: bool = False
    report: list[str] = field(default_factory=list)


_RUN = pytest.StashKey[_Run]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--db-reuse``, ``--db-create`` and the ``db_migrations`` and ``db_metadata`` ini options."""
    group = parser.getgroup("db", "test databases (db-pytest)")
    group.addoption(
        "--db-reuse",
        action="store_true",
        help="keep the test databases after the run and use them again next time (their schema is brought up to date)",
    )
    group.addoption("--db-create", action="store_true", help="with --db-reuse: create the test databases anew")
    parser.addini(
        "db_migrations",
        "the alembic.ini whose migrations build every test database (upgrade head), relative to the rootdir; "
        "for a named database, a line name=path (needs db-core[migrations])",
        type="linelist",
        default=[],
    )
    parser.addini(
        "db_metadata",
        "the MetaData (or declarative base) whose tables every test database gets, as package.module:Base; "
        "for a named database (DB_DATABASES__<NAME>__*), a line name=package.module:Base",
        type="linelist",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    """Point the run at its test databases (settings only: nothing connects yet)."""
    from db_core import DEFAULT_DATABASE, ConfigurationError, DatabaseSettings, DBError, configure, get_connector

    run = _Run(reuse=config.getoption("db_reuse"), recreate=config.getoption("db_create"))
    config.stash[_RUN] = run
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    suffix = f"_{worker}" if worker else ""
    try:
        metadata = _per_database(config.getini("db_metadata"))
        migrations = _per_database(config.getini("db_migrations"))
        configured = DatabaseSettings()
        names = configured.database_names
        for option, given in (("db_metadata", metadata), ("db_migrations", migrations)):
            unknown = sorted(given.keys() - set(names))
            if unknown:
                raise ConfigurationError(
                    f"{option} names {unknown}, which are not configured databases ({', '.join(names)})"
                )
        tests: dict[str, DatabaseSettings] = {}
        for name in names:
            own = configured.database(name)
            connector = get_connector(own)
            test = own.for_database(connector.test_database_name(suffix))
            tests[name] = test
            ini = config.rootpath / migrations[name] if name in migrations else None
            run.databases.append(_TestDatabase(name, get_connector(test), metadata.get(name), ini))
        named = {name: test for name, test in tests.items() if name != DEFAULT_DATABASE}
        run.settings = tests[DEFAULT_DATABASE].model_copy(update={"databases": named})
    except DBError as exc:
        # Said by the fixtures that need a database: a run that uses none must not fail for it.
        run.error = exc
        return
    # From here on, no code of this run reaches the configured databases.
    configure(run.settings)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line per test database: created or reused, then dropped or kept."""
    run = config.stash.get(_RUN, None)
    if run is not None and run.report:
        terminalreporter.write_sep("-", "db: test databases")
        for line in run.report:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def db_settings(pytestconfig: pytest.Config) -> DatabaseSettings:
    """The settings of the run's test databases: the ``DB_*`` ones with each database renamed ``test_<name>``.

    Under pytest-xdist each worker's names end in its id (``test_app_gw0``).
    ``db_core.get_settings()`` returns the same during the run.
    """
    run = pytestconfig.stash[_RUN]
    if run.error is not None:
        raise run.error
    assert run.settings is not None
    return run.settings


@pytest.fixture(scope="session")
def db_setup(pytestconfig: pytest.Config, db_settings: DatabaseSettings) -> Iterator[DatabaseSettings]:
    """Create the test databases once per run (per xdist worker), with their schema; drop them at the end.

    A leftover of an interrupted run is dropped first. The schema comes from
    the ``db_migrations`` ini option (Alembic's ``upgrade head``) and the
    ``db_metadata`` one (``create_all`` of what is still missing). ``--db-reuse`` keeps the
    databases between runs (``--db-create`` to start afresh). Override this
    fixture to build the schema another way or to load shared data (request
    the original by name in the override, then add to it).
    """
    run = pytestconfig.stash[_RUN]
    _run_async(_create(run))
    yield db_settings
    _run_async(_finish(run))


@pytest_asyncio.fixture
async def db_engine(db_setup: DatabaseSettings) -> AsyncEngine:
    """The test database's engine on the test's event loop (``db_core.get_engine()``).

    What a test writes through it directly is committed and stays for later
    tests; use :func:`db_session` for tests that are rolled back.
    """
    from db_core import get_engine

    return get_engine()


@pytest_asyncio.fixture
async def db_session(db_setup: DatabaseSettings) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that is rolled back after the test, with everything the test did.

    While the test runs, every session of every configured database joins
    that transaction (``db_core.join_transaction``): ``UnitOfWork``,
    ``get_sessionmaker()`` and the FastAPI dependencies commit to savepoints,
    so code that commits, nests units of work or catches an
    ``IntegrityError`` and goes on is rolled back all the same. On MySQL and
    MariaDB, DDL (which the server would commit) fails instead of running.
    """
    from db_core import get_engine, join_transaction

    async with AsyncExitStack() as stack:
        session: AsyncSession | None = None
        for name in db_setup.database_names:
            connection = await stack.enter_async_context(get_engine(name).connect())
            outer = await connection.begin()
            stack.push_async_callback(_roll_back, outer, name)
            sessionmaker = stack.enter_context(join_transaction(connection, name))
            if session is None:
                session = await stack.enter_async_context(sessionmaker())
        assert session is not None
        yield session


@pytest.fixture
def db_app(request: pytest.FixtureRequest, db_session: AsyncSession) -> Iterator[FastAPI]:
    """Your ``app`` fixture's FastAPI application, its ``dependency_overrides`` restored after the test.

    Define an ``app`` fixture that returns the application. Its dependencies
    (``TransactionDep``, ``SessionDep``, your own over ``UnitOfWork``) use the
    test's transaction of :func:`db_session` when the app is called on the
    test's event loop, e.g. with ``httpx.AsyncClient(transport=httpx.ASGITransport(app=db_app))``;
    overrides the test sets are undone afterwards.
    """
    app: FastAPI = request.getfixturevalue("app")
    saved = dict(app.dependency_overrides)
    yield app
    app.dependency_overrides.clear()
    app.dependency_overrides.update(saved)


async def _roll_back(outer: Any, name: str) -> None:
    if not outer.is_active:
        raise AssertionError(
            f"the test ended its transaction on database {name!r} (a COMMIT or ROLLBACK on the db_session "
            "fixture's connection): what it wrote before may have been kept"
        )
    await outer.rollback()


async def _create(run: _Run) -> None:
    from db_core import get_engine

    # The schema goes through this loop's engines of the test databases (the run's settings are
    # configured already); the loop's end disposes them.
    for database in run.databases:
        connector = database.connector
        if not run.reuse or run.recreate:
            await connector.drop_database()  # a leftover of an interrupted run
        created = await connector.create_database()
        database.created = True
        if database.migrations is not None:
            from db_core.migrations import upgrade

            await upgrade("head", config=database.migrations, database=database.name)
        if database.metadata is not None:
            metadata = _import_metadata(database.metadata)
            async with get_engine(database.name).begin() as connection:
                await connection.run_sync(metadata.create_all)
        how = "created" if created else "reused (--db-reuse)"
        run.report.append(f"{connector.database!r} ({connector.name}, database {database.name!r}): {how}")


async def _finish(run: _Run) -> None:
    from db_core import dispose_engine

    await dispose_engine()
    for database in run.databases:
        if not database.created:
            continue
        if run.reuse:
            run.report.append(f"{database.connector.database!r}: kept (--db-reuse)")
        else:
            await database.connector.drop_database()
            run.report.append(f"{database.connector.database!r}: dropped")


def _per_database(lines: list[str]) -> dict[str, str]:
    """An ini option's lines, ``value`` (the default database's) or ``name=value``, by database name."""
    from db_core import DEFAULT_DATABASE

    paths: dict[str, str] = {}
    for line in lines:
        name, equals, path = line.rpartition("=")
        paths[name.strip().lower() if equals else DEFAULT_DATABASE] = path.strip()
    return paths


def _import_metadata(path: str) -> MetaData:
    """``package.module:Base`` (or ``...:Base.metadata``, ``...:metadata``) as a MetaData."""
    from sqlalchemy import MetaData

    from db_core import ConfigurationError

    module_name, colon, attributes = path.partition(":")
    if not colon or not module_name or not attributes:
        raise ConfigurationError(f"db_metadata = {path!r}: write it as package.module:Base")
    try:
        found: Any = importlib.import_module(module_name)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"db_metadata = {path!r} cannot be imported: {exc}") from exc
    metadata = getattr(found, "metadata", found)
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(f"db_metadata = {path!r} is neither a MetaData nor has one (a declarative base)")
    return metadata


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on a loop of its own in a thread: whichever loop the tests use, none runs here."""
    with ThreadPoolExecutor(1, thread_name_prefix="db-pytest") as executor:
        return executor.submit(asyncio.run, coro).result()
