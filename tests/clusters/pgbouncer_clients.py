"""A worker process of the PgBouncer tests: ``python pgbouncer_clients.py WORKER CLIENTS UNITS``.

Runs CLIENTS concurrent clients of UNITS mixed units of work each, with the
``DB_*`` settings of its environment, and prints the errors they raised as a
JSON list of strings.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from sqlalchemy import text

from db_core import UnitOfWork, dispose_engine

READ = text("SELECT note FROM item WHERE client = :c AND n < :n")
UPDATE = text("UPDATE item SET note = :note WHERE client = :c")


async def mixed_units(client: int, units: int) -> list[str]:
    """``units`` units of work of four kinds, each with bound parameters; the errors they raised."""
    errors: list[str] = []
    rng = random.Random(client)
    for n in range(units):
        kind = rng.randrange(4)
        try:
            if kind == 0:
                async with UnitOfWork() as session:
                    await session.execute(
                        text("INSERT INTO item (client, n, note) VALUES (:c, :n, :note)"),
                        {"c": client, "n": n, "note": f"row {n}"},
                    )
            elif kind == 1:
                async with UnitOfWork(read_only=True) as session:
                    await session.execute(READ, {"c": client, "n": n})
            elif kind == 2:
                async with UnitOfWork() as session:
                    await session.execute(UPDATE, {"c": client, "note": "x"})
                    await session.execute(text("SELECT count(*) FROM item WHERE client = :c"), {"c": client})
            else:
                async with UnitOfWork() as session:
                    await session.scalar(text("SELECT max(n) FROM item WHERE client = :c"), {"c": client})
        except Exception as exc:  # reported: the test is about how many there are
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


async def main(worker: int, clients: int, units: int) -> list[str]:
    try:
        results = await asyncio.gather(*(mixed_units(worker * 1000 + c, units) for c in range(clients)))
    finally:
        await dispose_engine()
    return [error for errors in results for error in errors]


if __name__ == "__main__":
    worker, clients, units = (int(arg) for arg in sys.argv[1:4])
    print(json.dumps(asyncio.run(main(worker, clients, units))))
