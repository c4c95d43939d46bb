"""``run_transaction``: a unit of work run again after a transient failure, a bounded number of times.

Serializable isolation, deadlocks and multi-primary clusters (Galera) make
the server abort transactions that did nothing wrong; the fix is to run the
whole transaction again, from its first statement, in a new transaction.
Only failures the connector calls transient are retried (serialization
failure, deadlock), never a constraint violation or a syntax error, and
never forever: attempts are bounded and the waits between them grow, with
jitter, up to a cap.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from db_core.engine import get_connector_instance
from db_core.errors import UnitOfWorkError, describe_cause
from db_core.unit_of_work import UnitOfWork, in_unit_of_work

__all__ = ["run_transaction"]

logger = logging.getLogger("db_core")

T = TypeVar("T")


async def run_transaction(
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    database: str | None = None,
    read_only: bool = False,
    attempts: int = 5,
    backoff_seconds: float = 0.05,
    max_backoff_seconds: float = 2.0,
) -> T:
    """``await work(session)`` in a new :class:`~db_core.UnitOfWork`, run again on a transient failure.

    The unit commits when ``work`` returns, and its result is returned. On a
    failure the connector calls transient (PostgreSQL 40001/40P01, MySQL and
    MariaDB 1213/1205, Galera's conflicts at COMMIT), the unit is rolled back
    and ``work`` runs again in a new one, after ``backoff_seconds`` doubled at
    each attempt, capped at ``max_backoff_seconds``, with jitter; at most
    ``attempts`` runs in all, then the last error is raised. A connection lost
    while ``work`` ran (the server rolled the transaction back) is retried too,
    and in a read-only unit also one lost at COMMIT; one lost during a
    read-write COMMIT is not, since that commit may have happened. ``work`` must
    not have effects outside the database that cannot be repeated.

    Refused (:class:`~db_core.errors.UnitOfWorkError`) inside an open unit of
    work of the same task: the transaction to retry would be the outer one.
    """
    if attempts < 1:
        raise ValueError(f"attempts={attempts!r}: run_transaction needs at least 1")
    if in_unit_of_work():
        raise UnitOfWorkError(
            "run_transaction() called inside an open UnitOfWork: only a whole transaction can be run again. "
            "Call it outside, or wrap the outer unit of work in it instead"
        )
    connector = get_connector_instance(database)
    for attempt in range(1, attempts + 1):
        in_work = False
        try:
            async with UnitOfWork(database=database, read_only=read_only) as session:
                in_work = True
                result = await work(session)
                in_work = False
            return result
        except DBAPIError as exc:
            lost = exc.connection_invalidated and (in_work or read_only)
            if not (lost or (exc.orig is not None and connector.is_transient(exc.orig))):
                raise
            if attempt == attempts:
                exc.add_note(f"db_core: run_transaction gave up after {attempts} attempts")
                raise
            delay = min(max_backoff_seconds, backoff_seconds * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            logger.info(
                "transaction attempt %d of %d failed (%s); running it again in %.3f s",
                attempt,
                attempts,
                describe_cause(exc),
                delay,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
