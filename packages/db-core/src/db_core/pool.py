"""The connection pool: SQLAlchemy's asyncio queue pool, with an exhaustion error that says what to do."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from db_core.errors import PoolExhaustedError

__all__ = ["QueuePool"]


class QueuePool(AsyncAdaptedQueuePool):
    """:class:`~sqlalchemy.pool.AsyncAdaptedQueuePool` raising :class:`~db_core.errors.PoolExhaustedError`.

    The error is still a :class:`sqlalchemy.exc.TimeoutError`, so code
    written against SQLAlchemy keeps catching it.
    """

    def __init__(
        self, creator: Any, pool_size: int = 5, max_overflow: int = 10, timeout: float = 30.0, **kw: Any
    ) -> None:
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, timeout=timeout, **kw)
        self._limits = (pool_size, max_overflow, timeout)

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except sa_exc.TimeoutError:
            # Raised outside the except: SQLAlchemy's TimeoutError would only repeat it as context.
            error = PoolExhaustedError(*self._limits)
        raise error
