"""The benchmark suite: ``./hatchw run bench:run`` (full) or ``./hatchw run bench:quick`` (about a minute).

On each backend (PostgreSQL, MariaDB/MySQL, SQLite) every contender of :mod:`contenders` runs
every workload of :mod:`measure`, interleaved: in each round each contender runs once, in a
rotated order, so a drift of the machine's speed hits all alike. W6 and W7, the Conduit
example's own queries (:mod:`conduit_load`), run in the same rounds, right after W1-W4 of the
two contenders they make sense for (bare SQLAlchemy and db). Reported per workload: the
median over the rounds of operations per second, its ratio to bare SQLAlchemy's, client CPU
per operation, W4's p50 and p99 latency, and round trips per operation. W5 (a FastAPI endpoint
under uvicorn, loaded by ``wrk`` from another process, 50 connections) runs when ``wrk`` is
installed; its CPU column is the server process's CPU per request.

Output: a markdown table on stdout; with ``--out DIR`` also ``results.md``, the raw numbers as
JSON (``results.json``) and a PNG of the ratios (``ratios.png``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import conduit_load
import http_load
from backends import Backend, drop, prepare
from contenders import DRIVERS, NAMES, started
from db_core.testing import TurnCounter
from measure import WORKLOADS, Run, concurrent, median, operation, round_trips, sequential

BACKENDS = ("postgres", "mysql", "sqlite")
POOL = (10, 20)
MODES = {
    # rounds, operations per sequential run (W1-W3), W2 operations per W4 task, W5 rounds, W5 seconds of load,
    # operations per W6 and W7 run (each several times the work of a W1-W3 one)
    "quick": (3, 200, 3, 1, 2, 30),
    "full": (5, 1500, 25, 3, 6, 300),
}


async def bench_backend(name: str, mode: str, workdir: Path) -> dict[str, Any]:
    """Every contender and workload on backend ``name``: {workload: {contender: numbers}}."""
    rounds, ops, per_task, w5_rounds, w5_seconds, conduit_ops = MODES[mode]
    backend = await prepare(name, workdir)
    results: dict[str, dict[str, dict[str, Any]]] = {
        w: {c: {"runs": []} for c in (conduit_load.NAMES if w in conduit_load.WORKLOADS else NAMES)} for w in WORKLOADS
    }
    try:
        await conduit_load.seed(backend)
        for round_no in range(rounds):
            order = NAMES[round_no % len(NAMES) :] + NAMES[: round_no % len(NAMES)]
            for contender_name in order:
                async with started(contender_name, backend, *POOL) as contender:
                    for workload in ("W1", "W2", "W3"):
                        await sequential(operation(contender, workload), max(10, ops // 10))  # warm-up
                        run = await sequential(operation(contender, workload), ops)
                        results[workload][contender_name]["runs"].append(run)
                    run = await concurrent(contender, per_task)
                    results["W4"][contender_name]["runs"].append(run)
                if contender_name in conduit_load.NAMES:
                    async with conduit_load.started(contender_name, backend, *POOL) as conduit:
                        for workload in conduit_load.WORKLOADS:
                            op = conduit_load.operation(conduit, workload)
                            await sequential(op, max(5, conduit_ops // 10))  # warm-up
                            results[workload][contender_name]["runs"].append(await sequential(op, conduit_ops))
                    await conduit_load.tidy(backend)
        if http_load.available():
            for round_no in range(w5_rounds):
                for contender_name in NAMES[round_no % len(NAMES) :] + NAMES[: round_no % len(NAMES)]:
                    url = backend.url(DRIVERS[name]).render_as_string(hide_password=False)
                    loaded = await asyncio.to_thread(http_load.run, name, contender_name, url, seconds=w5_seconds)
                    results["W5"][contender_name]["runs"].append(
                        Run(
                            loaded["requests_per_second"],
                            loaded["server_cpu_seconds_per_request"] * 1e6,
                            loaded["p50_ms"],
                            loaded["p99_ms"],
                        )
                    )
        else:
            print("W5 skipped: wrk is not installed (apt-get install wrk)", file=sys.stderr)
            del results["W5"]
        if name != "sqlite":
            for contender_name in NAMES:
                for workload, trips in (await count_round_trips(contender_name, backend)).items():
                    results[workload][contender_name]["round_trips"] = trips
    finally:
        await drop(backend)
    return {workload: summarise(by_contender) for workload, by_contender in results.items()}


async def count_round_trips(contender_name: str, backend: Backend) -> dict[str, float]:
    """Round trips per W1-W3 operation of one contender (and W6, W7 of its Conduit), through a counting relay."""
    assert backend.port is not None
    counter = TurnCounter((backend.host, backend.port))
    await counter.start()
    relayed = backend.through("127.0.0.1", counter.port)
    try:
        async with started(contender_name, relayed, *POOL) as contender:
            trips = {w: await round_trips(operation(contender, w), counter) for w in ("W1", "W2", "W3")}
        if contender_name in conduit_load.NAMES:
            async with conduit_load.started(contender_name, relayed, *POOL) as conduit:
                for w in conduit_load.WORKLOADS:
                    # W7: two of 20 operations reuse the title, as one in ten does in its runs; the 10 of
                    # warm-up take the savepoint's retry once, which asyncpg prepares on first use.
                    trips[w] = await round_trips(conduit_load.operation(conduit, w), counter, ops=20, warm_up=10)
        return trips
    finally:
        await counter.close()


def summarise(by_contender: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medians over the rounds, and each contender's ratio to bare SQLAlchemy's throughput."""
    summary: dict[str, dict[str, Any]] = {}
    for contender, data in by_contender.items():
        runs: list[Run] = data["runs"]
        summary[contender] = {
            "ops_per_second": median([r.ops_per_second for r in runs]),
            "cpu_us_per_op": median([r.cpu_us_per_op for r in runs]),
            "round_trips": data.get("round_trips"),
            "runs": [asdict(r) for r in runs],
        }
        if runs[0].p99_ms is not None:
            summary[contender]["p50_ms"] = median([r.p50_ms or 0.0 for r in runs])
            summary[contender]["p99_ms"] = median([r.p99_ms or 0.0 for r in runs])
    floor = summary["sqlalchemy"]["ops_per_second"]
    for numbers in summary.values():
        numbers["ratio_to_sqlalchemy"] = numbers["ops_per_second"] / floor
    return summary


def import_times(runs: int) -> dict[str, float]:
    """Median wall-clock milliseconds of a fresh interpreter importing each module (``pass``: the interpreter alone)."""
    times: dict[str, float] = {}
    for module in ("pass", "import sqlalchemy", "import sqlalchemy.ext.asyncio", "import db_core"):
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", module], check=True)
            samples.append((time.perf_counter() - started) * 1000)
        times[module] = round(median(samples), 1)
    return times


def markdown(report: dict[str, Any]) -> str:
    """The results as markdown tables, one per backend."""
    lines = [
        f"Machine: {report['machine']}; Python {report['python']}; SQLAlchemy {report['versions']['sqlalchemy']}; "
        f"mode {report['mode']} ({report['rounds']} interleaved rounds, medians).",
        "",
    ]
    for backend, workloads in report["backends"].items():
        lines += [
            f"### {backend}",
            "",
            "| workload | contender | ops/s | × bare SQLAlchemy | CPU µs/op | round trips | p50 ms | p99 ms |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for workload, contenders in workloads.items():
            for contender, n in contenders.items():
                trips = n.get("round_trips")
                lines.append(
                    f"| {workload} | {contender} | {n['ops_per_second']:,.0f} | {n['ratio_to_sqlalchemy']:.2f} | "
                    f"{n['cpu_us_per_op']:.0f} | {'-' if trips is None else f'{trips:g}'} | "
                    f"{_ms(n.get('p50_ms'))} | {_ms(n.get('p99_ms'))} |"
                )
        lines.append("")
    lines += ["Workloads: " + "; ".join(f"{w}: {d}" for w, d in WORKLOADS.items()) + ".", ""]
    lines += [
        "Import time, a fresh interpreter, median ms: "
        + ", ".join(f"`{statement}` {ms:.0f}" for statement, ms in report["import_ms"].items())
        + "."
    ]
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run the suite; the exit status (0: it ran, whatever the numbers)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 rounds of short runs (about a minute)")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="only these backends (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="directory for results.md, results.json, ratios.png")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    started_at = time.perf_counter()
    report: dict[str, Any] = {
        "mode": mode,
        "rounds": MODES[mode][0],
        "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("sqlalchemy", "asyncpg", "aiomysql", "aiosqlite", "db-core")},
        "drivers": DRIVERS,
        "backends": {},
    }
    report["import_ms"] = import_times(5 if args.quick else 15)
    with tempfile.TemporaryDirectory(prefix="dbbench-") as workdir:
        for name in args.backend or BACKENDS:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            report["backends"][name] = asyncio.run(bench_backend(name, mode, Path(workdir)))
    report["seconds"] = round(time.perf_counter() - started_at, 1)
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(text, encoding="utf-8")
        (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        from chart import draw  # matplotlib only when a chart is written

        draw(report, args.out / "ratios.png")
    print(f"took {report['seconds']} s", file=sys.stderr)
    return 0


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
