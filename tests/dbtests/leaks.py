"""The leak check every fault test ends with, and the fault report.

A test is clean when, after ``gc.collect()``: every pool it used has no
connection checked out, the garbage collector found no abandoned connection
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
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import Pool

from dbtests.servers import MYSQL_ADMIN_URL, POSTGRES_ADMIN_URL, admin, run_coroutine


@dataclass
class Usage:
    """The pools and server databases a test touched."""

    pools: weakref.WeakSet[Pool] = field(default_factory=weakref.WeakSet)
    urls: set[URL] = field(default_factory=set)


@contextmanager
def tracking() -> Iterator[Usage]:
    """Record every pool and database URL that a connection is opened on meanwhile."""
    usage = Usage()

    def connected(conn: Connection) -> None:
        usage.pools.add(conn.engine.pool)
        usage.urls.add(conn.engine.url)

    event.listen(Engine, "engine_connect", connected)
    try:
        yield usage
    finally:
        event.remove(Engine, "engine_connect", connected)


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
    for url in usage.urls:
        found += [f"{url.get_backend_name()} {url.database}: {line}" for line in _idle_in_transaction(url)]
    return found


def _shared(url: URL) -> str | None:
    """The backend whose shared server ``url`` points at, if any."""
    for backend, admin_url in (("postgres", POSTGRES_ADMIN_URL), ("mysql", MYSQL_ADMIN_URL)):
        shared = _parse(admin_url)
        if url.get_backend_name() == shared.get_backend_name() and (url.host, url.port) == (
            shared.host,
            shared.port or (5432 if backend == "postgres" else 3306),
        ):
            return backend
    return None


def _parse(raw: str) -> URL:
    from sqlalchemy.engine import make_url

    return make_url(raw)


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
