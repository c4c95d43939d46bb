"""The ``db`` command (also ``python -m db_core``): ``db backends``, ``check``, ``init``, ``migrate``, ``shell``."""

from __future__ import annotations

import argparse
import asyncio
import configparser
import logging.config
import math
import os
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from db_core.__about__ import __version__
from db_core.connector import DBConnector
from db_core.errors import ConfigurationError, ConnectorLoadError, DBError, describe_cause, driver_error
from db_core.health import ping
from db_core.registry import ConnectorInfo, available_connectors, get_connector
from db_core.settings import DatabaseSettings

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``db`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="db", description="db: the database layer's command line")
    parser.add_argument("--version", action="version", version=f"db-core {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("backends", help="list the installed connectors, their distributions, and whether each loads")
    check = commands.add_parser(
        "check", help="connect to every configured server (primary, replicas, named databases) and report each"
    )
    check.add_argument(
        "--workers",
        type=_positive,
        default=_positive(os.environ.get("WEB_CONCURRENCY") or "1"),
        help="worker processes that each open these pools, for the connection budget "
        "(default: $WEB_CONCURRENCY, else 1)",
    )
    _add_init(commands)
    _add_migrate(commands)
    shell = _add_shell(commands)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["shell"]:  # its arguments are the client's, which argparse would not leave alone
        return _shell(shell, arguments[1:])
    args = parser.parse_args(arguments)
    if args.command == "backends":
        return _backends()
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "init":
        return _init(args)
    return _check(args.workers)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of workers, 1 or more")
    return value


def _backends() -> int:
    infos = available_connectors()
    if not infos:
        print('no connectors installed; install one, e.g. pip install "db-core[sqlite]"')
        return 1
    rows = [("NAME", "ALIASES", "DISTRIBUTION", "CLASS", "STATUS")]
    rows += [(i.name, ", ".join(i.aliases) or "-", i.origin, i.target, _status(i, infos)) for i in infos]
    widths = [max(len(row[col]) for row in rows) for col in range(4)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]]))
    # A broken or ambiguous connector is reported, not a failure: the others still work.
    return 0


def _status(info: ConnectorInfo, infos: list[ConnectorInfo]) -> str:
    """``ok``, or why selecting this connector would fail (it is imported to find out)."""
    rivals = [other.origin for other in infos if other.name == info.name and other != info]
    if rivals:
        return f"ambiguous: DB_TYPE={info.name} is also claimed by {', '.join(rivals)}"
    try:
        info.load()
    except ConnectorLoadError as exc:
        return f"broken: {exc.reason}"
    return "ok"


@dataclass(frozen=True)
class _Server:
    database: str
    role: str  # primary, or "replica N"
    connector: DBConnector
    # Connections one worker may open to it: its pool, or a replica's pool and its health check.
    per_worker: int


def _check(workers: int, env_file: Path | None = None) -> int:
    try:
        settings = DatabaseSettings() if env_file is None else DatabaseSettings(_env_file=env_file)
        servers = list(_servers(settings))
    except DBError as exc:
        print(f"db check: {exc}", file=sys.stderr)
        return 2
    status = 0
    for index, server in enumerate(servers):
        if index:
            print()
        status = max(status, _check_server(server, workers, show_names=len(servers) > 1))
    return status


def _servers(settings: DatabaseSettings) -> Iterator[_Server]:
    for name in settings.database_names:
        database = settings.database(name)
        connector = get_connector(database)
        pool = connector.pool_size + connector.max_overflow
        yield _Server(name, "primary", connector, pool)
        for number, replica in enumerate(database.replicas, 1):
            yield _Server(name, f"replica {number}", get_connector(replica), pool + 1)


def _check_server(server: _Server, workers: int, *, show_names: bool) -> int:
    connector = server.connector
    settings = connector.settings
    try:
        url = connector.url.render_as_string(hide_password=True)
        engine = connector.create_engine()
    except Exception as exc:
        # A missing driver or a URL the dialect refuses: still one line, never a traceback.
        reason = settings.mask_password(describe_error(exc, settings))
        print(f"db check: cannot use connector {connector.name!r}: {reason}", file=sys.stderr)
        return 2
    if show_names:
        print(f"database:   {server.database}")
        print(f"role:       {server.role}")
    print(f"connector:  {connector.name} ({type(connector).__module__}.{type(connector).__qualname__})")
    print(f"url:        {url}")

    async def run() -> None:
        try:
            # The driver's connect timeout bounds the connection; this bounds the rest.
            async with asyncio.timeout(settings.connect_timeout_seconds * 2 + 5):
                result = await ping(engine)
                async with engine.connect() as connection:
                    lag = await connector.replica_lag_seconds(connection) if server.role != "primary" else None
                    limit = await connector.max_connections(connection)
        finally:
            await engine.dispose()
        print(f"server:     {result.backend} {result.server_version}")
        print(f"round trip: {result.round_trip_seconds * 1000:.2f} ms")
        if lag is not None:
            behind = "replication is not running" if math.isinf(lag) else f"{lag:.1f} s"
            print(f"lag:        {behind} (DB_REPLICA_MAX_LAG_SECONDS={settings.replica_max_lag_seconds:g})")
        budget = workers * server.per_worker
        print(f"connections: up to {budget} ({_budget(server, workers)}) of the server's {limit or 'unknown'}")
        if limit is not None and budget > limit:
            print(
                f"db check: warning: {server.database} {server.role}: {workers} worker(s) may open {budget} "
                f"connections, more than the server's max_connections ({limit}); lower DB_POOL_SIZE or "
                "DB_MAX_OVERFLOW, run fewer workers, raise max_connections, or put a pooler (PgBouncer) in front",
                file=sys.stderr,
            )

    try:
        asyncio.run(run())
    except DBError as exc:
        # Found only while connecting (a SQLite directory that does not exist): still the settings.
        print(f"db check: {settings.mask_password(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        reason = settings.mask_password(describe_error(exc, settings))
        print(f"db check: cannot connect to {url}: {reason}", file=sys.stderr)
        return 1
    return 0


def _budget(server: _Server, workers: int) -> str:
    pool = "DB_POOL_SIZE + DB_MAX_OVERFLOW"
    if server.role != "primary":
        pool += " + 1 health check"
    return f"{workers} worker(s) x ({pool})"


def describe_error(exc: BaseException, settings: DatabaseSettings) -> str:
    """One line for a connection failure: the driver's own message, without SQLAlchemy's wrapping."""
    if isinstance(exc, TimeoutError):
        if str(exc):  # a connector's own message, naming the server and the setting
            return str(exc).splitlines()[0]
        return f"no answer within the timeout (DB_CONNECT_TIMEOUT_SECONDS={settings.connect_timeout_seconds:g})"
    try:
        connector = get_connector(settings)
    except DBError:
        return describe_cause(exc)
    if connector.is_missing_database(driver_error(exc)):
        name = connector.database
        return (
            f"the database {name!r} does not exist on the server: create it (CREATE DATABASE {name}), "
            "or set DB_NAME to one that exists"
        )
    return describe_cause(exc)


# -- db init ------------------------------------------------------------------------------------------------------


def _add_init(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = commands.add_parser(
        "init",
        help="ask the backend, the integrations and the connection details; write .env; run db check",
        description="Ask the database backend, FastAPI, unit of work, pool settings and the connection details "
        "(the password hidden), write them to a .env file (mode 0600), print the pip install line for the "
        "choices and run db check. Each flag answers its question; with --yes the others take their defaults "
        "and nothing is asked. Nothing is written before the last answer.",
    )
    init.add_argument("--backend", metavar="NAME", help="postgres (default), mysql or sqlite")
    init.add_argument("--fastapi", action=argparse.BooleanOptionalAction, help="FastAPI integration (default: yes)")
    init.add_argument(
        "--unit-of-work", action=argparse.BooleanOptionalAction, help="the unit of work pattern (default: yes)"
    )
    init.add_argument("--pool-size", type=int, metavar="N", help="pooled connections (default: 10; SQLite: 1)")
    init.add_argument("--max-overflow", type=int, metavar="N", help="extra connections above the pool (20; SQLite: 0)")
    init.add_argument("--host", help="server host (default: localhost)")
    init.add_argument("--port", type=int, metavar="PORT", help="server port (default: 5432, 3306)")
    init.add_argument("--name", help="database name (default: app); SQLite: the file (default: app.db)")
    init.add_argument("--user", help="user name (default: app)")
    init.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (with --yes; else $DB_PASSWORD, else none)",
    )
    init.add_argument("--env-file", type=Path, default=Path(".env"), metavar="PATH", help="the file to write (.env)")
    init.add_argument("--example", type=Path, metavar="PATH", help="also write an example module using the choices")
    init.add_argument("--force", action="store_true", help="replace existing files, keeping each old one as PATH.bak")
    init.add_argument("--no-check", action="store_true", help="do not run db check at the end")
    init.add_argument("-y", "--yes", action="store_true", help="ask nothing: defaults where no flag answers")


def _init(args: argparse.Namespace) -> int:
    from db_core import scaffold

    backend = None
    if args.backend is not None:
        backend = scaffold.normalise_backend(args.backend)
        if backend is None:
            print(f"db init: --backend {args.backend!r}: choose one of {', '.join(scaffold.BACKENDS)}", file=sys.stderr)
            return 2
    if args.password_stdin and not args.yes:
        print("db init: --password-stdin needs --yes (stdin is then not free for the questions)", file=sys.stderr)
        return 2
    if not args.yes and not sys.stdin.isatty():
        print("db init: no terminal to ask in; answer with flags and --yes (db init --help)", file=sys.stderr)
        return 2
    answers = scaffold.Answers(
        backend=backend,
        fastapi=args.fastapi,
        unit_of_work=args.unit_of_work,
        pool_size=args.pool_size,
        max_overflow=args.max_overflow,
        host=args.host,
        port=args.port,
        name=args.name,
        user=args.user,
        example=args.example,
    )
    try:
        scaffold.run(
            answers,
            env_file=args.env_file,
            force=args.force,
            interactive=not args.yes,
            password_stdin=args.password_stdin,
        )
    except scaffold.InitError as exc:
        print(f"db init: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("\ndb init: cancelled; nothing written", file=sys.stderr)
        return 130
    except EOFError:
        print("\ndb init: end of input before the last answer; nothing written", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"db init: {exc}", file=sys.stderr)
        return 1
    if args.no_check:
        return 0
    print("db check:", flush=True)
    try:
        return _check(_positive(os.environ.get("WEB_CONCURRENCY") or "1"), env_file=args.env_file)
    except KeyboardInterrupt:
        print(f"\ndb init: check cancelled; {args.env_file} is written", file=sys.stderr)
        return 130


# -- db migrate ---------------------------------------------------------------------------------------------------


def _add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser(
        "migrate",
        help='Alembic migrations on the DB_* database (pip install "db-core[migrations]")',
        description="Alembic migrations on the database of the DB_* settings; no URL is ever written to a file.",
    )
    migrate.add_argument("--config", default="alembic.ini", metavar="PATH", help="Alembic's ini file (alembic.ini)")
    migrate.add_argument(
        "--database", metavar="NAME", help="a named database (DB_DATABASES__NAME__*) instead of the DB_* one"
    )
    steps = migrate.add_subparsers(dest="step", required=True, metavar="SUBCOMMAND")
    init = steps.add_parser("init", help="write alembic.ini and the migrations directory (env.py, versions/)")
    init.add_argument("directory", nargs="?", default="migrations", help="the migrations directory (migrations)")
    upgrade = steps.add_parser("upgrade", help="upgrade the database to REV (head)")
    upgrade.add_argument("revision", nargs="?", default="head", metavar="REV")
    upgrade.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    downgrade = steps.add_parser("downgrade", help="downgrade the database to REV (-1, base, a revision id)")
    downgrade.add_argument("revision", metavar="REV")
    downgrade.add_argument("--sql", action="store_true", help="print the SQL (REV is then FROM:TO)")
    steps.add_parser("current", help="the database's revision")
    steps.add_parser("history", help="the revisions, newest first")
    revision = steps.add_parser("revision", help="write a new revision script")
    revision.add_argument("-m", "--message", required=True, help="what it does, also its file name")
    revision.add_argument("--autogenerate", action="store_true", help="compare the models with the database")
    steps.add_parser("check", help="exit 1 when the models and the database differ (or the database is behind)")


def _migrate(args: argparse.Namespace) -> int:
    from db_core import migrations

    try:
        migrations.require_alembic()
    except DBError as exc:
        print(f"db migrate: {exc}", file=sys.stderr)
        return 1
    if args.step == "init":
        try:
            migrations.init(args.directory, config=args.config)
        except DBError as exc:
            print(f"db migrate init: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.config} and {Path(args.directory) / 'env.py'} (with script.py.mako, README, versions/)")
        print(f"next: set target_metadata in {Path(args.directory) / 'env.py'} to your models' metadata, then")
        print('      db migrate revision -m "first" --autogenerate && db migrate upgrade')
        return 0
    settings: DatabaseSettings | None = None
    try:
        settings = DatabaseSettings().database(args.database)
        _configure_logging(Path(args.config))
        config = migrations.alembic_config(args.config, database=args.database)
        _run_step(config, args)
    except DBError as exc:
        return _failed(f"migrate {args.step}", exc, settings)
    except Exception as exc:
        return _report(exc, args.step, settings)
    return 0


def _run_step(config: Config, args: argparse.Namespace) -> None:
    from alembic import command

    if args.step == "upgrade":
        command.upgrade(config, args.revision, sql=args.sql)
    elif args.step == "downgrade":
        command.downgrade(config, args.revision, sql=args.sql)
    elif args.step == "current":
        command.current(config)
    elif args.step == "history":
        command.history(config)
    elif args.step == "revision":
        command.revision(config, message=args.message, autogenerate=args.autogenerate)
    else:
        command.check(config)


def _configure_logging(ini: Path) -> None:
    """The ini's logging sections, as Alembic's own command applies them (existing loggers stay enabled)."""
    parser = configparser.ConfigParser(interpolation=None)  # reads no value through interpolation
    if ini.is_file() and parser.read(ini, encoding="utf-8") and parser.has_section("loggers"):
        logging.config.fileConfig(ini, disable_existing_loggers=False)


def _report(exc: Exception, step: str, settings: DatabaseSettings | None) -> int:
    """One line for Alembic's errors and the database's; a traceback for a bug in a migration script."""
    from alembic.util import AutogenerateDiffsDetected, CommandError

    if isinstance(exc, AutogenerateDiffsDetected):
        # Alembic's list of changes (older versions put it in the message only).
        diffs: list[Any] = getattr(exc, "diffs", None) or [str(exc)]
        print("db migrate check: the models and the database differ:", file=sys.stderr)
        for diff in diffs:
            print(f"  {_masked(_describe_diff(diff), settings)}", file=sys.stderr)
        hint = 'write a migration: db migrate revision -m "..." --autogenerate, then db migrate upgrade'
        print(hint, file=sys.stderr)
        return 1
    if isinstance(exc, CommandError):
        hint = " (run db migrate upgrade)" if "not up to date" in str(exc) else ""
        print(f"db migrate {step}: {_masked(str(exc), settings)}{hint}", file=sys.stderr)
        return 1
    if isinstance(exc, OSError) or type(exc).__module__.startswith(("sqlalchemy", "asyncpg", "aiomysql")):
        reason = describe_error(exc, settings) if settings is not None else describe_cause(exc)
        print(f"db migrate {step}: {_masked(reason, settings)}", file=sys.stderr)
        return 1
    text = "".join(traceback.format_exception(exc))
    print(f"db migrate {step}: {_masked(text, settings)}", file=sys.stderr, end="")
    return 1


def _describe_diff(diff: Any) -> str:
    """An autogenerate difference, ``('add_table', Table(...))``, as ``add_table items``."""
    if isinstance(diff, list):  # the modify_* ones come as a list per column
        return "; ".join(_describe_diff(item) for item in diff)
    if not isinstance(diff, tuple) or not diff:
        return str(diff)
    operation, *rest = diff
    if str(operation).startswith("modify_") and len(rest) >= 6:  # schema, table, column, info, existing, new
        return f"{operation} {rest[1]}.{rest[2]}: {rest[4]!r} -> {rest[5]!r}"
    if str(operation).endswith("_column") and len(rest) >= 3:  # schema, table, column
        return f"{operation} {rest[1]}.{getattr(rest[2], 'name', rest[2])}"
    parts = [str(operation)]
    for item in rest:
        name = getattr(item, "name", None)
        table = getattr(getattr(item, "table", None), "name", None)
        if isinstance(name, str):
            parts.append(name if table is None or table == name else f"{name} on {table}")
        elif item is not None:
            parts.append(str(item))
    return " ".join(parts)


def _failed(command: str, exc: DBError, settings: DatabaseSettings | None) -> int:
    """Say ``exc`` in one line, password masked; the exit status: 2 for the settings' fault, else 1."""
    print(f"db {command}: {_masked(str(exc), settings)}", file=sys.stderr)
    return 2 if isinstance(exc, ConfigurationError) else 1


def _masked(text: str, settings: DatabaseSettings | None) -> str:
    return settings.mask_password(text) if settings is not None else text


# -- db shell -----------------------------------------------------------------------------------------------------

_SHELL_EXAMPLES = """\
everything after the options (and after --) goes to the client unchanged:
  db shell -c 'select 1'        PostgreSQL: psql
  db shell -e 'select 1'        MySQL/MariaDB: mariadb (or mysql)
  db shell 'select 1;'          SQLite: sqlite3
"""


def _add_shell(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    shell = commands.add_parser(
        "shell",
        help="open the backend's client (psql, mariadb, sqlite3) on the DB_* database",
        description="Open the backend's own client on the database of the DB_* settings and return its exit "
        "status. The password goes to it through its environment or a private file, never its command line.",
        epilog=_SHELL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shell.add_argument(
        "--database", metavar="NAME", help="a named database (DB_DATABASES__NAME__*) instead of the DB_* one"
    )
    shell.add_argument("arguments", nargs="*", metavar="ARGS", help="the client's own arguments")
    return shell


def _shell(parser: argparse.ArgumentParser, arguments: list[str]) -> int:
    """``db shell [--database NAME] [--] ARGS...``: the client's exit status (127: not installed)."""
    database: str | None = None
    if arguments[:1] in (["-h"], ["--help"]):
        parser.print_help()
        return 0
    if arguments[:1] == ["--database"]:
        if len(arguments) < 2:
            parser.error("argument --database: expected one argument")
        database, arguments = arguments[1], arguments[2:]
    elif arguments and arguments[0].startswith("--database="):
        database, arguments = arguments[0].partition("=")[2], arguments[1:]
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    settings: DatabaseSettings | None = None
    try:
        settings = DatabaseSettings().database(database)
        connector = get_connector(settings)
        if settings.ssl_mode != "disable":
            connector.check_ssl_files()  # named before the client reads them
    except DBError as exc:
        print(f"db shell: {_masked(str(exc), settings)}", file=sys.stderr)
        return 2
    try:
        with connector.shell(arguments) as command:
            # The client needs none of the DB_* variables; DB_PASSWORD stays out of its environment.
            env = {k: v for k, v in os.environ.items() if not _is_setting(k)}
            env.update(command.env)
            client = command.argv[0]
            if shutil.which(client, path=env.get("PATH", os.defpath)) is None:
                print(_missing_client(client, command.package), file=sys.stderr)
                return 127
            return _run_client(command.argv, env, client, command.package)
    except DBError as exc:
        return _failed("shell", exc, settings)


def _is_setting(name: str) -> bool:
    upper = name.upper()
    return upper.startswith("DB_") or upper == "DATABASE_URL"


def _missing_client(client: str, package: str) -> str:
    install = f"; install it (Debian, Ubuntu: apt-get install {package})" if package else ""
    return f"db shell: {client} is not installed (not found on PATH){install}"


def _run_client(argv: list[str], env: dict[str, str], client: str, package: str) -> int:
    """Run the client in the foreground; its exit status (128 + N when signal N ended it)."""
    try:
        process = subprocess.Popen(argv, env=env)
    except FileNotFoundError:
        print(_missing_client(client, package), file=sys.stderr)
        return 127
    except PermissionError as exc:
        print(f"db shell: cannot run {client}: {exc.strerror}", file=sys.stderr)
        return 126

    def forward(signum: int, _frame: FrameType | None) -> None:
        process.send_signal(signum)

    # Ctrl-C reaches the client from the terminal (one process group) and is the client's to handle;
    # a SIGTERM or SIGHUP sent to db alone is passed on. Either way db outlives the client, so the
    # private file is removed.
    handlers: dict[signal.Signals, Callable[[int, FrameType | None], None] | signal.Handlers] = {
        signal.SIGINT: signal.SIG_IGN,
        signal.SIGTERM: forward,
        signal.SIGHUP: forward,
    }
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        while True:
            try:
                status = process.wait()
                break
            except KeyboardInterrupt:  # one that came before SIGINT was ignored
                continue
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)
    return 128 - status if status < 0 else status
