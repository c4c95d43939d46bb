"""The connection pool: SQLAlchemy's asyncio queue pool, serving waiters in turn and checking connections cheaply.

Each pool also keeps counters (connections opened, invalidations, timeouts, checkouts) that
:func:`pool_stats` adds up, with the pool's current state, over every event loop's engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util.queue import Empty

try:  # SQLAlchemy 2.1
    from sqlalchemy.util.concurrency import await_ as _await
except ImportError:  # 2.0
    from sqlalchemy.util import await_only as _await

from db_core.errors import PoolExhaustedError

__all__ = ["POOL_STATS_KEYS", "QueuePool", "pool_stats"]

# Where a connection's last check-in time is kept (its record's info, which SQLAlchemy
# empties when it reconnects the record: a new connection has no such time).
_IDLE_SINCE = "db_core.idle_since"

POOL_STATS_KEYS = (
    "size",
    "max",
    "checked_out",
    "idle",
    "overflow",
    "waiting",
    "timeouts",
    "invalidations",
    "connections_created",
    "checkouts",
    "acquire_seconds_total",
)
"""The keys of :func:`pool_stats`, in order; stable names, never removed."""


class _Counters:
    """A pool's running totals; one object, shared by a pool and those ``engine.dispose()`` puts in its place.

    Plain attribute increments, on the pool's own event loop: no lock, as the
    pool's queue itself.
    """

    __slots__ = ("acquire_seconds", "checkouts", "created", "invalidations", "timeouts")

    def __init__(self) -> None:
        self.created = 0
        self.invalidations = 0
        self.timeouts = 0
        self.checkouts = 0
        self.acquire_seconds = 0.0

    def connected(self, _dbapi_connection: Any, _record: Any) -> None:
        self.created += 1

    def invalidated(self, _dbapi_connection: Any, _record: Any, _exception: BaseException | None) -> None:
        self.invalidations += 1


class QueuePool(AsyncAdaptedQueuePool):
    """:class:`~sqlalchemy.pool.AsyncAdaptedQueuePool` that serves waiting tasks in turn.

    SQLAlchemy's pool puts a returned connection back in its queue and wakes
    the first waiter, but the task that returned it (or any other) can take it
    before the waiter runs; the waiter then goes to the back of the line. Under
    load some tasks lose that race again and again: the tail latency. Here a
    returned connection goes straight to the task that has waited longest,
    and a task that finds others waiting queues behind them. A returned
    connection is also never closed while a task waits for one.

    Exhaustion raises :class:`~db_core.errors.PoolExhaustedError`, still a
    :class:`sqlalchemy.exc.TimeoutError`, so code written against SQLAlchemy
    keeps catching it.
    """

    def __init__(
        self, creator: Any, pool_size: int = 5, max_overflow: int = 10, timeout: float = 30.0, **kw: Any
    ) -> None:
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, timeout=timeout, **kw)
        self._limits = (pool_size, max_overflow, timeout)
        self._waiters: deque[asyncio.Future[ConnectionPoolEntry | None]] = deque()
        self._liveness: tuple[Callable[[Any], bool], float] | None = None
        self._counters = _Counters()
        if kw.get("_dispatch") is None:
            # Pool events: a connection opened (a first one or a replacement), one invalidated, now
            # or at its next checkin (soft). recreate() hands these listeners, and the counters they
            # add to, to the pool that takes this one's place.
            event.listen(self, "connect", self._counters.connected)
            event.listen(self, "invalidate", self._counters.invalidated)
            event.listen(self, "soft_invalidate", self._counters.invalidated)

    def check_liveness(self, is_closed: Callable[[Any], bool], idle_seconds: float) -> None:
        """Replace a dead pooled connection before handing it out, pinging only those idle ``idle_seconds``.

        SQLAlchemy's ``pool_pre_ping`` pings at every checkout: three round
        trips with asyncpg (BEGIN, a statement, ROLLBACK), more than the unit
        of work itself. Here a connection the driver already knows to be
        closed (``is_closed``: the server hung up, after a restart, a kill, an
        idle timeout) is replaced without asking the server, and only one idle
        for ``idle_seconds`` or more is pinged: the ones firewalls and NAT
        tables drop silently. A connection that dies unnoticed in between fails
        its first statement, which :class:`~db_core.session.DBSession` retries
        on a new connection.
        """
        self._liveness = (is_closed, idle_seconds)

    def recreate(self) -> QueuePool:
        """The pool ``engine.dispose()`` puts in this one's place: it checks liveness as this one does."""
        pool = super().recreate()
        assert isinstance(pool, QueuePool)
        pool._liveness = self._liveness
        pool._counters = self._counters
        return pool

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._liveness is not None and record.dbapi_connection is not None:
            record.info[_IDLE_SINCE] = time.monotonic()
        if not self._hand_over(record):
            super()._do_return_conn(record)

    def _dec_overflow(self) -> Literal[True]:
        super()._dec_overflow()
        # A connection was closed, or could not be made: the first waiter may open one.
        self._hand_over(None)
        return True

    def _hand_over(self, record: ConnectionPoolEntry | None) -> bool:
        """Give ``record`` (``None``: room to open a connection) to the longest waiting task, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                try:
                    waiter.set_result(record)
                except RuntimeError:  # its event loop is closed: nobody is waiting there any more
                    continue
                return True
        return False

    def stats(self) -> dict[str, int | float]:
        """The share of this pool in :func:`pool_stats`: its state now, and the totals since the engine was made."""
        counters = self._counters
        max_overflow = self._max_overflow
        return {
            "size": self.size(),
            "max": self.size() + max_overflow if max_overflow >= 0 else -1,
            "checked_out": self.checkedout(),
            "idle": self.checkedin(),
            "overflow": max(self.overflow(), 0),
            # A copy first (atomic under the GIL): another thread may be reading the stats.
            "waiting": sum(1 for waiter in list(self._waiters) if not waiter.done()),
            "timeouts": counters.timeouts,
            "invalidations": counters.invalidations,
            "connections_created": counters.created,
            "checkouts": counters.checkouts,
            "acquire_seconds_total": counters.acquire_seconds,
        }

    def _do_get(self) -> ConnectionPoolEntry:
        started = time.perf_counter()
        try:
            record = self._take_or_open() if not self._waiters else None
            if record is None:
                record = self._wait_for_turn()
            if self._liveness is not None:
                self._check(record, *self._liveness)
        finally:
            self._counters.acquire_seconds += time.perf_counter() - started
        self._counters.checkouts += 1
        return record

    def _check(self, record: ConnectionPoolEntry, is_closed: Callable[[Any], bool], idle_seconds: float) -> None:
        """Invalidate ``record``'s connection if it is dead; the checkout then opens a new one."""
        idle_since = record.info.pop(_IDLE_SINCE, None)
        connection = record.dbapi_connection
        if idle_since is None or connection is None:
            return  # a new connection, or none yet: nothing to check
        if is_closed(connection):
            reason = "the server closed this pooled connection while it was idle"
        elif time.monotonic() - idle_since >= idle_seconds and not self._answers_ping(connection):
            reason = (
                f"a pooled connection idle for over DB_POOL_PRE_PING_IDLE_SECONDS={idle_seconds:g} "
                "did not answer a ping"
            )
        else:
            return
        record.invalidate(sa_exc.DisconnectionError(reason))

    def _answers_ping(self, connection: Any) -> bool:
        try:
            return bool(self._dialect.do_ping(connection))  # type: ignore[attr-defined]  # a real dialect here
        except Exception:
            # Whatever the failure, the connection is replaced; an error that is not a disconnect
            # (a ping the server refuses) would recur on the new one and be raised there.
            return False

    def _take_or_open(self) -> ConnectionPoolEntry | None:
        try:
            return self._pool.get(False)
        except Empty:
            pass
        if not self._inc_overflow():
            return None
        try:
            return self._create_connection()
        except BaseException:
            self._dec_overflow()
            raise

    def _wait_for_turn(self) -> ConnectionPoolEntry:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        first = False
        while True:
            waiter: asyncio.Future[ConnectionPoolEntry | None] = loop.create_future()
            if first:  # woken to open a connection, and could not: it keeps its place at the front
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                record = _await(waiter)
            except _Expired:
                self._counters.timeouts += 1
                error = PoolExhaustedError(*self._limits)
            except BaseException:
                # Cancelled: what was handed over meanwhile goes to the next in line.
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    handed = waiter.result()
                    if handed is not None:
                        self._do_return_conn(handed)
                    else:
                        self._hand_over(None)
                raise
            else:
                if record is not None:
                    return record
                found = self._take_or_open()
                if found is not None:
                    return found
                first = True
                continue
            finally:
                timer.cancel()
                if waiter.cancelled() or not waiter.done() or waiter.exception() is not None:
                    # Not handed anything, so still in line (expired or cancelled): leave it.
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
            # Raised outside the except: _Expired would only be repeated as its context.
            raise error


class _Expired(Exception):
    """A waiter's turn did not come within the pool timeout."""


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


def pool_stats(database: str | None = None) -> dict[str, int | float]:
    """The connection pool of ``database`` (default: the ``DB_*`` one) in numbers, for metrics.

    Added up over the pools of every event loop's engine of ``database`` in
    this process (each loop has an engine and a pool of its own): what a
    metrics endpoint or a connection budget wants. The read replicas' and
    ``DB_DIRECT_URL``'s pools are not counted. Cheap: it reads counters the
    pools keep and opens no connection; safe to call from any thread.

    Keys (:data:`POOL_STATS_KEYS`), every value an ``int`` except the seconds:

    - ``size``: ``DB_POOL_SIZE``, summed over the loops' pools;
    - ``max``: ``DB_POOL_SIZE + DB_MAX_OVERFLOW``, the most connections the pools may open;
    - ``checked_out``: connections in use now (``pool.checkedout()``);
    - ``idle``: connections open and waiting in the pool now (``pool.checkedin()``);
    - ``overflow``: connections open beyond ``size`` now (``pool.overflow()``, 0 when negative);
    - ``waiting``: tasks waiting for a connection now;
    - ``timeouts``: :class:`~db_core.errors.PoolExhaustedError` raised so far;
    - ``invalidations``: connections invalidated so far (found dead at checkout, lost in use,
      ``invalidate()``d), each replaced by a new one when next used;
    - ``connections_created``: connections opened so far, replacements included;
    - ``checkouts``: connections handed out so far;
    - ``acquire_seconds_total`` (a ``float``): time spent getting them (waiting for a turn,
      opening a connection, checking a pooled one is alive).

    The totals count from the engine's creation on, across ``engine.dispose()``;
    an engine disposed with its loop (or by :func:`~db_core.dispose_engine`)
    leaves the sum. Before the first use of ``database`` on any loop every
    number is 0 but ``size`` and ``max``, those of one pool.
    """
    from db_core.engine import get_connector_instance, live_engines  # imported late: engine imports this module

    stats: dict[str, int | float] = dict.fromkeys(POOL_STATS_KEYS, 0)
    stats["acquire_seconds_total"] = 0.0
    pools = [engine.sync_engine.pool for engine in live_engines(database)]
    ours = [pool for pool in pools if isinstance(pool, QueuePool)]
    if not ours:
        connector = get_connector_instance(database)
        stats["size"] = connector.pool_size
        stats["max"] = connector.pool_size + connector.max_overflow
        return stats
    for pool in ours:
        for key, value in pool.stats().items():
            stats[key] += value
    return stats
