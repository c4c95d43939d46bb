"""The leak check every fault test ends with, and the fault report.

A test is clean when, after ``gc.collect()``: every pool it used has no
connection checked out, no connection it checked out is still out (counted
by pool events, so an engine disposed with a connection out, which resets
its pool's count, still shows), the garbage collector found no abandoned connection
(SQLAlchemy's "non-checked-in connection" warning, or any warning), and the
shared servers show no session of the test's databases ``idle in
transaction``.
"""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import Pool

from dbtests.servers import MYSQL_ADMIN_URL, POSTGRES_ADMIN_URL, admin, run_coroutine


@dataclass
class Usage:
    """The pools and server databases a test touched."""

    pools: weakref.WeakSet[Pool] = field(default_factory=weakref.WeakSet)
    urls: set[URL] = field(default_factory=set)
    # Connection records checked out and not yet checked in, by id, with where they came from.
    out: dict[int, str] = field(default_factory=dict)


@contextmanager
def tracking() -> Iterator[Usage]:
    """Record every pool, database URL and checkout meanwhile; call :func:`leaks` inside the block."""
    usage = Usage()

    def connected(conn: Connection) -> None:
        usage.pools.add(conn.engine.pool)
        usage.urls.add(conn.engine.url)

    def checked_out(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        usage.out[id(record)] = repr(record)

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        usage.out.pop(id(record), None)

    listeners = [(Engine, "engine_connect", connected), (Pool, "checkout", checked_out), (Pool, "checkin", checked_in)]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield usage
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)


def leaks(usage: Usage) -> list[str]:
    """What ``usage`` left behind, one line each; empty when clean."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    found += [f"warning during gc: {w.category.__name__}: {w.message}" for w in caught]
    for pool in list(usage.pools):
        checkedout = getattr(pool, "checkedout", None)
        if checkedout is not None and checkedout() != 0:
            found.append(f"{pool.status()}: {checkedout()} connection(s) still checked out")
    found += [f"{record}: checked out and never checked in" for record in usage.out.values()]
    for url in usage.urls:
        found += [f"{url.get_backend_name()} {url.database}: {line}" for line in _idle_in_transaction(url)]
    return found


# (backend name, host, port) of each shared server.
_SHARED = {
    backend: (url.get_backend_name(), url.host, url.port or default_port)
    for backend, url, default_port in (
        ("postgres", make_url(POSTGRES_ADMIN_URL), 5432),
        ("mysql", make_url(MYSQL_ADMIN_URL), 3306),
    )
}


def _shared(url: URL) -> str | None:
    """The backend whose shared server ``url`` points at, if any."""
    address = (url.get_backend_name(), url.host, url.port)
    return next((backend for backend, shared in _SHARED.items() if shared == address), None)


def _idle_in_transaction(url: URL) -> list[str]:
    backend = _shared(url)
    database = url.database or ""
    if backend is None or not database.replace("_", "").isalnum():
        return []  # a server of the test's own: it is gone with its connections
    rows: list[Any]
    if backend == "postgres":
        rows = run_coroutine(
            admin(
                "postgres",
                [
                    "SELECT pid, application_name, state, query FROM pg_stat_activity "
                    f"WHERE datname = '{database}' AND state LIKE 'idle in transaction%'"
                ],
            )
        )
    else:
        rows = run_coroutine(
            admin(
                "mysql",
                [
                    "SELECT p.ID, p.USER, p.COMMAND, t.trx_started FROM information_schema.PROCESSLIST p "
                    "JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
                    f"WHERE p.DB = '{database}' AND p.COMMAND = 'Sleep'"
                ],
            )
        )
    return [f"idle in transaction: {tuple(row)}" for row in rows]


@dataclass
class FaultRecord:
    """One line of the fault table."""

    fault: str
    backend: str
    injected: int
    recovered: int
    rows_lost: int = 0
    leaked: int = 0


@dataclass
class FaultReport:
    """The numbers the fault tests record, printed as a table at the end of the run."""

    records: list[FaultRecord] = field(default_factory=list)

    def count_leaks(self, since: int, leaked: int) -> None:
        """Charge ``leaked`` to the records added since record number ``since`` (by the test just run)."""
        for record in self.records[since:]:
            record.leaked = leaked

    def add(self, fault: str, backend: str, *, injected: int, recovered: int, rows_lost: int = 0) -> None:
        """Record ``injected`` faults of one kind, of which the system recovered from ``recovered``."""
        self.records.append(FaultRecord(fault, backend, injected, recovered, rows_lost))

    def markdown(self) -> str:
        """The table, as in tests/README.md."""
        lines = [
            "| fault | backend | injected | recovered | rows lost | connections leaked |",
            "|---|---|---:|---:|---:|---:|",
        ]
        merged: dict[tuple[str, str], FaultRecord] = {}
        for r in self.records:
            key = (r.fault, r.backend)
            if key in merged:
                m = merged[key]
                m.injected += r.injected
                m.recovered += r.recovered
                m.rows_lost += r.rows_lost
                m.leaked += r.leaked
            else:
                merged[key] = FaultRecord(**vars(r))
        for r in merged.values():
            lines.append(f"| {r.fault} | {r.backend} | {r.injected} | {r.recovered} | {r.rows_lost} | {r.leaked} |")
        return "\n".join(lines)
