"""How the workloads are timed and their round trips counted.

Timing: W1-W3, W6 and W7 run one operation after another in one task, W4 runs 200 tasks at
once, each doing W2 several times; a run's throughput is operations per wall-clock second, its
client CPU the process's CPU time per operation. Round trips are counted, not guessed: the contender reaches
the server through a relay that counts the client's turns (each time the client sends after the
server has answered, or first), over a run of operations after a warm-up.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from contenders import Contender
from db_core.testing import TurnCounter

WORKLOADS = {
    "W1": "SELECT 1 in a fresh unit of work",
    "W2": "primary-key lookup in a 10,000-row table",
    "W3": "insert one row and commit",
    "W4": "200 concurrent tasks x W2, pool 10 + 20 overflow",
    "W5": "W2 as a FastAPI endpoint under uvicorn, 50 connections from wrk",
    "W6": (
        "Conduit's GET /api/articles query: the 20 newest of 1,000 articles with authors, tags, "
        "favorites counts, the viewer's flags and the total count, in a read transaction"
    ),
    "W7": "Conduit's POST /api/articles transaction: an article with 3 tags, slug from the title (every 10th taken)",
}
TASKS = 200


def operation(contender: Contender, workload: str) -> Callable[[], Awaitable[object]]:
    """One W1, W2 or W3 operation of ``contender``."""
    if workload == "W1":
        return contender.select_1
    if workload == "W2":
        return lambda: contender.get(random.randint(1, 10_000))
    return contender.insert


@dataclass
class Run:
    """One timed run of a workload."""

    ops_per_second: float
    cpu_us_per_op: float
    p50_ms: float | None = None
    p99_ms: float | None = None


async def sequential(op: Callable[[], Awaitable[object]], ops: int) -> Run:
    """``ops`` operations ``op`` one after another."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(ops):
        await op()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(ops / wall, cpu / ops * 1e6)


async def concurrent(contender: Contender, ops_per_task: int) -> Run:
    """W4: :data:`TASKS` tasks at once, each doing W2 ``ops_per_task`` times; per-operation latency."""
    latencies: list[float] = []

    async def task() -> None:
        for _ in range(ops_per_task):
            started = time.perf_counter()
            await contender.get(random.randint(1, 10_000))
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(task() for _ in range(TASKS)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ops = TASKS * ops_per_task
    cuts = statistics.quantiles(latencies, n=100)
    return Run(ops / wall, cpu / ops * 1e6, cuts[49] * 1000, cuts[98] * 1000)


async def round_trips(
    op: Callable[[], Awaitable[object]], counter: TurnCounter, ops: int = 50, warm_up: int = 1
) -> float:
    """Round trips per operation ``op`` (sequential), after ``warm_up`` operations."""
    for _ in range(warm_up):
        await op()
    counter.turns = 0
    for _ in range(ops):
        await op()
    return counter.turns / ops


def median(values: list[float]) -> float:
    """The median (of the rounds)."""
    return statistics.median(values)
