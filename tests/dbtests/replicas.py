"""Helpers of the replica tests (tests/clusters)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any


async def in_fresh_context(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` as a task that has written nothing (another request, another worker).

    A task made with ``create_task`` copies its creator's context, and with it
    the record of the creator's recent writes that sends reads to the primary.
    """
    return await asyncio.create_task(coro, context=contextvars.Context())
