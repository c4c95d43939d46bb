"""The ``db`` command (also ``python -m db_core``): ``db backends``, ``db check``."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from db_core.__about__ import __version__
from db_core.connector import DBConnector
from db_core.errors import ConnectorLoadError, DBError, describe_cause
from db_core.health import ping
from db_core.registry import ConnectorInfo, available_connectors, get_connector
from db_core.settings import DatabaseSettings

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
    args = parser.parse_args(argv)
    if args.command == "backends":
        return _backends()
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


def _check(workers: int) -> int:
    try:
        settings = DatabaseSettings()
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
    return describe_cause(exc)
