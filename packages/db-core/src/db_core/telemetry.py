"""OpenTelemetry: a span per statement and the connection pools' metrics, opt in.

Install the extra (``pip install "db-core[opentelemetry]"``), set up the
OpenTelemetry SDK as usual, then call :func:`instrument` once at start-up::

    from db_core import telemetry

    telemetry.instrument()  # or instrument(tracer_provider=..., meter_provider=...)

Spans come from ``opentelemetry-instrumentation-sqlalchemy``: its per-engine
tracer is attached to the ``sync_engine`` of every engine db_core uses for
statements (each event loop's, primary, ``DB_DIRECT_URL`` and replicas),
those open now and those made later, exactly once per engine. The global
``SQLAlchemyInstrumentor().instrument()`` is not used: it patches
``create_engine`` and ``Engine.connect`` for the whole process, and attached
twice to one engine (``create_async_engine`` calls ``create_engine``) it leaves
spans open (opentelemetry-python-contrib issue 2149).

What a span holds: the statement as sent, with its placeholders (``?``,
``$1``, ``%s``), never the bound values, and no SQL comment added
(``enable_commenter`` stays off); ``db.system``, ``db.name``, ``db.user``, the
server's host and port, never the password. A failed statement's span ends
with status ``ERROR`` whose description is the exception's class only
(``IntegrityError``): a database's error message may quote a bound value
(``Duplicate entry 'x'``, ``invalid input ... 'x'``). A statement cancelled
while it runs ends its span too.

Pool metrics (:data:`METRICS`) are observable instruments read from
:func:`~db_core.pool_stats` when a metric reader collects, one series per
database (``db.client.connection.pool.name``: ``default`` or the named
database's name), under the OpenTelemetry database-client names.

Importing :mod:`db_core` never imports this module nor OpenTelemetry.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.sqlalchemy.version import __version__ as _instrumentation_version
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import Status, StatusCode, TracerProvider
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from db_core import engine as _engines
from db_core.__about__ import __version__
from db_core.pool import pool_stats

__all__ = ["METRICS", "POOL_NAME", "STATE", "instrument", "instrumented", "uninstrument"]

# The span's instrumentation scope: that of opentelemetry-instrumentation-sqlalchemy, whose tracer makes them.
_TRACER_NAME = "opentelemetry.instrumentation.sqlalchemy"
_METER_NAME = "db_core"

POOL_NAME = "db.client.connection.pool.name"
"""The attribute naming the pool: the database's name, ``default`` for the ``DB_*`` one."""
STATE = "db.client.connection.state"
"""The attribute of ``db.client.connection.count``: ``idle`` or ``used``."""

METRICS: dict[str, tuple[str, str]] = {
    "db.client.connection.count": ("{connection}", "connections open now, by state (idle, used)"),
    "db.client.connection.idle.max": ("{connection}", "the most idle connections the pools keep (DB_POOL_SIZE)"),
    "db.client.connection.idle.min": ("{connection}", "the fewest idle connections the pools keep (always 0)"),
    "db.client.connection.max": ("{connection}", "the most connections the pools may open (size + overflow)"),
    "db.client.connection.pending_requests": ("{request}", "tasks waiting for a connection now"),
    "db.client.connection.timeouts": ("{timeout}", "pool timeouts (PoolExhaustedError) so far"),
}
"""The pool metrics: name to (unit, what it counts); all but the last are up-down counters, the last a counter."""


@dataclass
class _Instrumented:
    tracer: trace.Tracer
    meter_provider: MeterProvider | None
    # Every sync engine given a tracer, with the listeners to remove from it.
    engines: weakref.WeakKeyDictionary[Engine, list[tuple[str, Callable[..., Any]]]]


_lock = threading.Lock()
_state: _Instrumented | None = None
# The meter providers that have our instruments (an instrument cannot be removed: their callbacks
# report only while instrumented with that provider). None is the global provider.
_metered: list[MeterProvider | None] = []
# The instrumentation's own pool counter (db.client.connections.usage, an older name) would count
# the pools a second time: it gets a counter that records nothing.
_NO_USAGE = metrics.NoOpMeter(_METER_NAME).create_up_down_counter("db.client.connections.usage")


def instrument(*, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None) -> bool:
    """Trace every statement of db_core's engines and publish the pools' metrics; idempotent.

    ``tracer_provider`` and ``meter_provider`` default to OpenTelemetry's
    global ones. Engines open now are instrumented at once, those made later
    (another event loop, a replica, ``DB_DIRECT_URL``) when they are made.
    Returns ``True``, or ``False`` when already instrumented: a second call
    changes nothing, not even the providers (:func:`uninstrument` first to
    change them).
    """
    global _state
    with _lock:
        if _state is not None:
            return False
        tracer = trace.get_tracer(_TRACER_NAME, _instrumentation_version, tracer_provider)
        _state = _Instrumented(tracer, meter_provider, weakref.WeakKeyDictionary())
        if not any(provider is meter_provider for provider in _metered):
            _create_instruments(meter_provider)
            _metered.append(meter_provider)
    _engines.watch_engines(_trace_engine)
    return True


def uninstrument() -> None:
    """Undo :func:`instrument`: no more spans from db_core's engines nor pool metrics (no-op if not instrumented)."""
    global _state
    _engines.unwatch_engines(_trace_engine)
    with _lock:
        state, _state = _state, None
    if state is None:
        return
    for engine, listeners in list(state.engines.items()):
        for identifier, fn in listeners:
            if event.contains(engine, identifier, fn):
                event.remove(engine, identifier, fn)
    state.engines.clear()


def instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _state is not None


def _trace_engine(engine: AsyncEngine) -> None:
    """Give ``engine``'s ``sync_engine`` the instrumentation's tracer, unless it has ours already."""
    with _lock:
        state = _state
        sync_engine = engine.sync_engine
        if state is None or sync_engine in state.engines:
            return
        registry: list[Any] = EngineTracer._remove_event_listener_params
        before = len(registry)
        EngineTracer(state.tracer, sync_engine, _NO_USAGE, enable_commenter=False)  # type: ignore[no-untyped-call]
        # The listeners it registered (it keeps them in a class-wide list, for the global uninstrument()).
        listeners: list[tuple[str, Callable[..., Any]]] = [(name, fn) for _ref, name, fn in registry[before:]]
        del registry[before:]
        # Its error handler gives the span the error's message: ours replaces it.
        for identifier, fn in [(identifier, fn) for identifier, fn in listeners if identifier == "handle_error"]:
            event.remove(sync_engine, identifier, fn)
            listeners.remove((identifier, fn))
        event.listen(sync_engine, "handle_error", _end_span_on_error)
        listeners.append(("handle_error", _end_span_on_error))
        state.engines[sync_engine] = listeners


def _end_span_on_error(context: ExceptionContext) -> None:
    """End the failed statement's span with status ERROR described by the exception's class alone.

    In place of the instrumentation's handler, which describes it with the
    error's message: that may quote a bound value. SQLAlchemy calls it for
    exceptions that are not errors too (``asyncio.CancelledError``), so a
    cancelled statement's span ends as well.
    """
    execution_context = context.execution_context
    span = getattr(execution_context, "_otel_span", None)
    if span is None:
        return
    error = context.original_exception
    name = type(error).__qualname__
    if span.is_recording():
        span.set_attribute("error.type", f"{type(error).__module__}.{name}")
        span.set_status(Status(StatusCode.ERROR, name))
    span.end()
    execution_context._otel_span = None  # type: ignore[union-attr]


def _create_instruments(meter_provider: MeterProvider | None) -> None:
    meter = metrics.get_meter(_METER_NAME, __version__, meter_provider)

    def reporting(read: Callable[[str, dict[str, int | float]], Iterable[Observation]]) -> Any:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            state = _state
            if state is None or state.meter_provider is not meter_provider:
                return []
            observations: list[Observation] = []
            for name in _engines.get_settings().database_names:
                observations.extend(read(name, pool_stats(name)))
            return observations

        return callback

    def gauge(key: str) -> Callable[[str, dict[str, int | float]], Iterable[Observation]]:
        def read(name: str, stats: dict[str, int | float]) -> Iterable[Observation]:
            value = stats[key]
            return [Observation(value, {POOL_NAME: name})] if value >= 0 else []  # max -1: no limit

        return read

    def no_idle_minimum(name: str, _stats: dict[str, int | float]) -> Iterable[Observation]:
        return [Observation(0, {POOL_NAME: name})]

    def count(name: str, stats: dict[str, int | float]) -> Iterable[Observation]:
        return [
            Observation(stats["idle"], {POOL_NAME: name, STATE: "idle"}),
            Observation(stats["checked_out"], {POOL_NAME: name, STATE: "used"}),
        ]

    readers = {
        "db.client.connection.count": count,
        "db.client.connection.idle.max": gauge("size"),
        "db.client.connection.idle.min": no_idle_minimum,
        "db.client.connection.max": gauge("max"),
        "db.client.connection.pending_requests": gauge("waiting"),
    }
    for metric, read in readers.items():
        unit, description = METRICS[metric]
        meter.create_observable_up_down_counter(metric, [reporting(read)], unit=unit, description=description)
    unit, description = METRICS["db.client.connection.timeouts"]
    meter.create_observable_counter(
        "db.client.connection.timeouts", [reporting(gauge("timeouts"))], unit=unit, description=description
    )
