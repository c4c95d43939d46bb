"""W5: ``GET /items/{id}`` under a real uvicorn, loaded by ``wrk`` from another process.

:func:`run` starts :mod:`http_app` in ``uvicorn`` (one worker, its own process), waits until it
answers, warms it up for a second, then lets ``wrk`` send requests for random ids over
``connections`` keep-alive connections. It returns the throughput of successful responses, the
latency percentiles wrk measured, the errors (failed connections, reads and writes, timeouts
and responses with status 400 or above) and the server's CPU time per request, read from
``/proc/<pid>/stat``.

``wrk`` is Debian's package (``apt-get install wrk``). From the command line::

    python benchmarks/http_load.py --backend sqlite --contender db --url sqlite+aiosqlite:////tmp/bench.db --seconds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

__all__ = ["ROWS", "WrkNotInstalledError", "available", "run"]

logger = logging.getLogger("http_load")

ROWS = 10_000  # bench_items holds ids 1..ROWS
HERE = Path(__file__).resolve().parent
WARMUP_SECONDS = 1
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
# Far above any latency a healthy run sees, so that wrk's percentiles are not cut off at its default 2 s.
REQUEST_TIMEOUT = "10s"
_MARK = "BENCH_RESULT"

# Every thread draws ids from a sequence of its own, the same on every run; the requests are
# formatted once, so wrk's Lua costs as little as possible per request. done() reports in
# microseconds, which spares parsing wrk's rounded, unit-suffixed text.
_SCRIPT = """\
local rows = %(rows)d
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local prepared = {}

function init(args)
  math.randomseed(thread_number or 1)
  for id = 1, rows do
    prepared[id] = wrk.format("GET", "/items/" .. id)
  end
end

function request()
  return prepared[math.random(1, rows)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("%(mark)s %%.0f %%.0f %%.0f %%.0f %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class WrkNotInstalledError(RuntimeError):
    """The load generator ``wrk`` is not on ``PATH``."""


def available() -> bool:
    """Whether W5 can run here: ``wrk`` is installed."""
    return shutil.which("wrk") is not None


def run(
    backend: str, contender: str, url: str, *, seconds: float, connections: int = 50, threads: int = 2
) -> dict[str, float]:
    """Load ``contender``'s app on ``backend`` (database at SQLAlchemy ``url``) for ``seconds``.

    wrk runs whole seconds, so ``seconds`` is rounded (to 1 at least). Returns
    ``requests_per_second`` (successful responses), ``p50_ms``, ``p99_ms``, ``errors`` and
    ``server_cpu_seconds_per_request``. Raises :class:`WrkNotInstalledError` without ``wrk``,
    and :class:`RuntimeError` when the server does not start, answers wrongly or does not stop.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkNotInstalledError("W5 needs the load generator wrk, which is not installed: apt-get install wrk")
    if threads < 1 or connections < threads:
        raise ValueError(f"need at least one thread and a connection per thread, got {threads=} {connections=}")
    with tempfile.TemporaryDirectory(prefix="http_load_") as workdir:
        script = Path(workdir) / "items.lua"
        script.write_text(_SCRIPT % {"rows": ROWS, "mark": _MARK})
        log_path = Path(workdir) / "uvicorn.log"
        with log_path.open("wb") as log:
            server, port = _start_server(backend, contender, url, log)
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_until_ready(server, base)
                load = [wrk, "-t", str(threads), "-c", str(connections), "--timeout", REQUEST_TIMEOUT]
                load += ["-s", str(script)]
                _wrk([*load, "-d", f"{WARMUP_SECONDS}s", base], WARMUP_SECONDS)
                duration = max(1, round(seconds))
                cpu_before = _cpu_seconds(server.pid)
                result = _wrk([*load, "-d", f"{duration}s", base], duration)
                cpu_after = _cpu_seconds(server.pid)
            except RuntimeError as exc:
                # The server's words come after it stopped: it logs a 500's traceback after sending the response.
                _stop(server, log_path, check=False)
                raise RuntimeError(f"W5 {contender}/{backend}: {exc}\nthe server said:\n{_tail(log_path)}") from None
            except BaseException:
                _stop(server, log_path, check=False)
                raise
            _stop(server, log_path)
        if result["errors"] and log_path.stat().st_size:
            logger.warning(
                "%s/%s: %d errors; the server said:\n%s", contender, backend, result["errors"], _tail(log_path)
            )
    requests = result["requests"]
    return {
        "requests_per_second": (requests - result["status_errors"]) / result["seconds"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["errors"],
        "server_cpu_seconds_per_request": (cpu_after - cpu_before) / requests if requests else float("nan"),
    }


def _start_server(backend: str, contender: str, url: str, log: BinaryIO) -> tuple[subprocess.Popen[bytes], int]:
    """Start uvicorn on a free port (found by binding to port 0: another process could take it in between)."""
    # The app reads nothing but BENCH_*: no DB_* variable left in this environment configures the library.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_") and k.upper() != "DATABASE_URL"}
    env.update(BENCH_BACKEND=backend, BENCH_CONTENDER=contender, BENCH_URL=url, PYTHONUNBUFFERED="1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [sys.executable, "-m", "uvicorn", "http_app:app", "--app-dir", str(HERE)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--loop", "asyncio"]
    command += ["--log-level", "warning"]
    # Its own session: a Ctrl-C at the terminal reaches this process only, which then stops the server in order.
    server = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return server, port


def _wait_until_ready(server: subprocess.Popen[bytes], base: str) -> None:
    """Wait until ``GET /items/1`` answers the expected row."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited with status {server.returncode} at startup")
        try:
            with urllib.request.urlopen(f"{base}/items/1", timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            hint = " (is bench_items filled with ids 1..10000?)" if exc.code == 404 else ""
            raise RuntimeError(f"GET /items/1 answered {exc.code}{hint}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
            continue
        if body != {"id": 1, "name": "item-1"}:
            raise RuntimeError(f"GET /items/1 answered {body!r}, expected {{'id': 1, 'name': 'item-1'}}")
        return
    raise RuntimeError(f"uvicorn did not answer within {STARTUP_TIMEOUT_SECONDS:.0f} s")


def _wrk(command: list[str], seconds: int) -> dict[str, float]:
    """Run wrk and read the numbers its ``done()`` wrote."""
    completed = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(_MARK + " ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"wrk failed (status {completed.returncode}):\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    requests, duration_us, p50_us, p99_us, connect, read, write, status, timeout = (
        float(field) for field in lines[-1].split()[1:]
    )
    return {
        "requests": requests,
        "seconds": duration_us / 1e6,
        "p50_ms": p50_us / 1e3,
        "p99_ms": p99_us / 1e3,
        "errors": connect + read + write + status + timeout,
        "status_errors": status,
    }


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads: aiosqlite's too)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may hold spaces: count the fields after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _stop(server: subprocess.Popen[bytes], log_path: Path, *, check: bool = True) -> None:
    """SIGTERM, as a process manager stops it, and wait for the lifespan's shutdown.

    With ``check``, a server that does not stop in time or exits with an error raises.
    """
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            if not check:
                return
            raise RuntimeError(
                f"uvicorn did not stop within {STOP_TIMEOUT_SECONDS:.0f} s of SIGTERM:\n{_tail(log_path)}"
            ) from None
    # uvicorn re-raises the signal it handled once it has shut down, so SIGTERM's status is a clean stop.
    if check and server.returncode not in (0, -signal.SIGTERM):
        raise RuntimeError(f"uvicorn exited with status {server.returncode}:\n{_tail(log_path)}")


def _tail(log_path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:]) or "(no output)"
    return "(no output)"


def main(argv: list[str] | None = None) -> None:
    """Run W5 once and print its numbers as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", required=True, choices=["postgres", "mysql", "sqlite"])
    parser.add_argument("--contender", required=True, choices=["raw", "sqlalchemy", "seed", "db"])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL, e.g. postgresql+asyncpg://postgres@host/dbbench")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    result = run(
        args.backend,
        args.contender,
        args.url,
        seconds=args.seconds,
        connections=args.connections,
        threads=args.threads,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
