"""``ping()``: is the database there, which server is it, how far away."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db_core.engine import get_engine

__all__ = ["PingResult", "ping"]


@dataclass(frozen=True)
class PingResult:
    """What :func:`ping` found."""

    backend: str
    """The SQLAlchemy dialect name, e.g. ``postgresql``."""
    server_version: str
    """The server's version, e.g. ``15.20``."""
    round_trip_seconds: float
    """The time one ``SELECT 1`` took on an open connection."""


async def ping(engine: AsyncEngine | None = None) -> PingResult:
    """Connect through ``engine`` (default: :func:`~db_core.get_engine`) and time one ``SELECT 1``.

    Raises whatever the driver raises when the server cannot be reached; the
    connection goes back to the pool in every case.
    """
    engine = engine if engine is not None else get_engine()
    async with engine.connect() as connection:
        started = time.perf_counter()
        await connection.execute(text("SELECT 1"))
        elapsed = time.perf_counter() - started
        version = connection.dialect.server_version_info or ()
    return PingResult(engine.dialect.name, ".".join(str(part) for part in version), elapsed)
