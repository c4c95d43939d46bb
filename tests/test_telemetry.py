"""db_core.telemetry: OpenTelemetry spans and pool metrics, on real PostgreSQL, MariaDB and SQLite.

With the SDK's in-memory span exporter and metric reader (never the global
providers, which can be set once per process):

- instrumenting twice gives exactly one finished span per statement, through
  ``get_engine()`` and :class:`~db_core.UnitOfWork`, engines made before and
  after :func:`~db_core.telemetry.instrument` alike, with the backend's
  ``db.system``; no attribute, status or event holds the password (a login that
  has one) or a bound value;
- a failing statement's span and a cancelled one's end with status ERROR: as
  many spans end as start;
- an engine made on a new event loop after ``instrument()`` is traced, and so
  are the replicas' and ``DB_DIRECT_URL``'s engines; ``uninstrument()`` stops it all;
- the pool metrics carry the documented names, units and attributes, with
  :func:`~db_core.pool_stats`'s values;
- ``import db_core`` imports no OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db_core import DatabaseSettings, UnitOfWork, configure, dispose_engine, get_engine, pool_stats, telemetry
from db_core import engine as engine_module
from dbtests.secrets import PASSWORD, Login, assert_no_secret
from dbtests.servers import backend_settings

pytest_plugins = ["dbtests.secrets"]

BOUND = "bound-secret-4711"
DB_SYSTEM = {"sqlite": "sqlite", "postgres": "postgresql", "mysql": "mysql"}


class Counting(SpanProcessor):
    """Counts the spans started and ended: the in-memory exporter only sees those that end."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


@dataclass
class Otel:
    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    counting: Counting
    meter_provider: MeterProvider
    reader: InMemoryMetricReader

    def instrument(self) -> bool:
        return telemetry.instrument(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def spans(self) -> list[ReadableSpan]:
        """The finished statement spans (the instrumentation's: kind CLIENT, with db.system)."""
        return [
            span
            for span in self.exporter.get_finished_spans()
            if span.kind is SpanKind.CLIENT and span.attributes and "db.system" in span.attributes
        ]

    def metrics(self) -> dict[str, tuple[str, list[tuple[dict[str, Any], float]]]]:
        """Metric name to (unit, [(attributes, value)]) of one collection."""
        found: dict[str, tuple[str, list[tuple[dict[str, Any], float]]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = [(dict(point.attributes or {}), point.value) for point in metric.data.data_points]  # type: ignore[union-attr]
                    found[metric.name] = (metric.unit or "", points)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    counting = Counting()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.add_span_processor(counting)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        yield Otel(tracer_provider, exporter, counting, meter_provider, reader)
    finally:
        telemetry.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def backend_settings_(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, DatabaseSettings]:
    """Each backend in turn, logging in with the password on the servers (outside any event loop)."""
    if request.param == "sqlite":
        return request.param, backend_settings(request, "sqlite", tmp_path)
    login: Login = request.getfixturevalue(f"{request.param}_login")
    return request.param, login.settings()


@pytest.fixture
async def backend(backend_settings_: tuple[str, DatabaseSettings]) -> AsyncIterator[str]:
    """db_core configured for each backend in turn; the backend's name."""
    name, settings = backend_settings_
    configure(settings)
    try:
        yield name
    finally:
        await dispose_engine()
        configure(None)


def assert_clean(spans: list[ReadableSpan]) -> None:
    """No span's name, attributes, status or events hold the password or the bound value."""
    for span in spans:
        texts = [span.name, repr(dict(span.attributes or {})), span.status.description or ""]
        texts += [repr((event.name, dict(event.attributes or {}))) for event in span.events]
        for text_ in texts:
            assert_no_secret(text_, f"span {span.name!r}")
            assert BOUND not in text_, f"BOUND VALUE in span {span.name!r}: {text_}"


def statement(i: int) -> str:
    return f"SELECT :v AS otel_{i}"


def test_import_db_core_does_not_import_opentelemetry() -> None:
    code = "import sys, db_core; found = sorted(m for m in sys.modules if m.startswith('opentelemetry')); print(found)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout


async def test_one_span_per_statement_without_secrets(backend: str, otel: Otel) -> None:
    # An engine made before instrument() is traced from then on, not before.
    async with get_engine().connect() as conn:
        await conn.execute(text("SELECT 1"))
    assert otel.instrument() is True
    assert otel.instrument() is False  # idempotent: one span per statement all the same
    assert telemetry.instrumented()

    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request_span:
        async with get_engine().connect() as conn:
            for i in range(3):
                assert (await conn.execute(text(statement(i)), {"v": BOUND})).scalar() == BOUND
    async with UnitOfWork() as session:
        for i in range(3, 6):
            assert (await session.execute(text(statement(i)), {"v": BOUND})).scalar() == BOUND

    spans = otel.spans()
    statements = [str((span.attributes or {}).get("db.statement", "")) for span in spans]
    assert len(spans) == 6, statements
    assert all(f"otel_{i}" in statements[i] for i in range(6)), statements
    assert {(span.attributes or {}).get("db.system") for span in spans} == {DB_SYSTEM[backend]}
    # Traced inside the caller's trace: the span of the statement is the request's child.
    request_id = request_span.get_span_context().span_id
    assert all(span.parent is not None and span.parent.span_id == request_id for span in spans[:3])
    if backend != "sqlite":
        assert all((span.attributes or {}).get("db.user") for span in spans)
    assert_clean(otel.exporter.get_finished_spans())
    assert otel.counting.started == otel.counting.ended


async def _slow_statement(backend: str) -> str:
    if backend == "postgres":
        return "SELECT pg_sleep(5)"
    if backend == "mysql":
        return "SELECT SLEEP(5)"
    return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) SELECT count(*) FROM c"


async def test_failed_and_cancelled_statements_end_their_spans(backend: str, otel: Otel) -> None:
    otel.instrument()
    async with get_engine().connect() as conn:
        await conn.execute(text("CREATE TEMPORARY TABLE otel_t (v VARCHAR(40) PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO otel_t (v) VALUES (:v)"), {"v": BOUND})
        # The duplicate's error message quotes the value on MariaDB (and PostgreSQL's detail does).
        with pytest.raises(DBAPIError):
            await conn.execute(text("INSERT INTO otel_t (v) VALUES (:v)"), {"v": BOUND})
        await conn.rollback()
        if backend == "postgres":
            with pytest.raises(DBAPIError) as raised:  # asyncpg's message quotes the value itself
                await conn.execute(text("SELECT CAST(:v AS integer) + 1"), {"v": BOUND})
            assert BOUND in str(raised.value)  # so the check below has something to find
            await conn.rollback()

    async def slow() -> None:
        async with get_engine().connect() as conn:
            await conn.execute(text(await _slow_statement(backend)))

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.2)  # running by then (SQLite's ~1 s; the thread runs it to the end all the same)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert_clean(otel.exporter.get_finished_spans())
    failed = [span for span in otel.spans() if span.status.status_code is StatusCode.ERROR]
    assert len(failed) == (3 if backend == "postgres" else 2), [span.status for span in failed]
    assert failed[-1].status.description == "CancelledError"
    assert all(span.attributes and span.attributes.get("error.type") for span in failed)
    assert otel.counting.started == otel.counting.ended, "a span was left open"


async def test_engines_made_later_are_traced_once_and_uninstrument_stops(tmp_path: Path, otel: Otel) -> None:
    configure(DatabaseSettings(type="sqlite", name=str(tmp_path / "later.db"), _env_file=None))
    try:
        otel.instrument()

        def other_loop() -> None:
            async def run() -> None:
                async with get_engine().connect() as conn:  # this loop's engine, made now
                    await conn.execute(text(statement(0)), {"v": BOUND})

            asyncio.run(run())

        thread = threading.Thread(target=other_loop)
        thread.start()
        thread.join()
        async with get_engine().connect() as conn:
            await conn.execute(text(statement(1)), {"v": BOUND})
        otel.instrument()
        async with get_engine(direct=True).connect() as conn:  # without DB_DIRECT_URL: the same engine
            await conn.execute(text(statement(2)), {"v": BOUND})
        assert len(otel.spans()) == 3

        telemetry.uninstrument()
        assert not telemetry.instrumented()
        async with get_engine().connect() as conn:
            await conn.execute(text(statement(3)), {"v": BOUND})
        assert len(otel.spans()) == 3
        assert otel.metrics() == {}
        # And again, with the same providers: traced once more, one span per statement.
        otel.instrument()
        async with get_engine().connect() as conn:
            await conn.execute(text(statement(4)), {"v": BOUND})
        assert len(otel.spans()) == 4
        assert "db.client.connection.count" in otel.metrics()
    finally:
        await dispose_engine()
        configure(None)


async def test_pool_metrics_match_pool_stats(backend: str, otel: Otel) -> None:
    otel.instrument()
    engine = get_engine()
    async with engine.connect() as held:
        await held.execute(text("SELECT 1"))
        stats = pool_stats()
        found = otel.metrics()
    assert set(found) == set(telemetry.METRICS), sorted(found)
    for name, (unit, _description) in telemetry.METRICS.items():
        assert found[name][0] == unit, name
    pool = {telemetry.POOL_NAME: "default"}

    def value(name: str, **attributes: str) -> float:
        matching = [v for attrs, v in found[name][1] if attrs == {**pool, **attributes}]
        assert len(matching) == 1, (name, found[name])
        return matching[0]

    assert stats["checked_out"] == 1
    assert value("db.client.connection.count", **{telemetry.STATE: "used"}) == stats["checked_out"]
    assert value("db.client.connection.count", **{telemetry.STATE: "idle"}) == stats["idle"]
    assert value("db.client.connection.idle.max") == stats["size"]
    assert value("db.client.connection.idle.min") == 0
    assert value("db.client.connection.max") == stats["max"]
    assert value("db.client.connection.pending_requests") == stats["waiting"] == 0
    assert value("db.client.connection.timeouts") == stats["timeouts"] == 0
    # Once the connection is back, none is in use.
    found = otel.metrics()
    assert value("db.client.connection.count", **{telemetry.STATE: "used"}) == 0
    assert value("db.client.connection.count", **{telemetry.STATE: "idle"}) == pool_stats()["idle"] >= 1
    assert PASSWORD not in repr(found)


async def test_replica_and_direct_engines_are_traced(postgres_server: Any, otel: Otel) -> None:
    # The server stands in for a replica of itself: not usable as one (it is no standby), so the
    # read-only unit of work falls back to the primary; its engine is made, and traced, all the same.
    settings = postgres_server.settings()
    url = f"postgresql://{settings.user}@{settings.host}:{settings.port}/{settings.name}"
    configure(postgres_server.settings(replica_urls=url, replica_fallback="primary", direct_url=url))
    try:
        async with get_engine().connect() as conn:
            await conn.execute(text("SELECT 1"))
        otel.instrument()
        async with UnitOfWork(read_only=True) as session:
            await session.execute(text(statement(0)), {"v": BOUND})
        async with get_engine(direct=True).connect() as conn:
            await conn.execute(text(statement(1)), {"v": BOUND})
        entry = engine_module._get_loop_engine(None)
        assert entry.replicas
        assert entry.direct is not None
        state = telemetry._state
        assert state is not None
        traced = {engine.sync_engine for engine in entry.statement_engines()}
        assert traced <= set(state.engines), "an engine is not traced"
        assert len(traced) == 3
        statements = [str((span.attributes or {}).get("db.statement", "")) for span in otel.spans()]
        expected = [statement(i).replace(":v", "$1") for i in range(2)]
        assert [s for s in statements if "otel_" in s] == expected
    finally:
        await dispose_engine()
        configure(None)
