"""Several processes: a fork with pooled connections, and uvicorn with two workers, on real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from db_core.testing import free_port
from dbtests.servers import Server

HERE = Path(__file__).parent
SERVERS = [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
# What a connection shared by two processes, or used on the wrong loop, looks like in a log.
TROUBLE = ("Traceback", "another operation is in progress", "different loop", "Event loop is closed", "protocol")


def server_env(server: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_")}
    env.update(
        DB_TYPE=server.backend,
        DB_HOST=server.host,
        DB_PORT=str(server.port),
        DB_USER=server.user,
        DB_PASSWORD=server.password,
        DB_NAME=server.database,
        PYTHONPATH=os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]),
    )
    return env


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


def test_a_forked_child_never_uses_its_parent_s_connections(server: Server) -> None:
    result = subprocess.run(
        [sys.executable, str(HERE / "fork_child.py")],
        env=server_env(server),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["child_status"] == 0
    assert len(set(seen["before"])) == 3
    assert not set(seen["child"]) & set(seen["before"]), "the child used a connection of its parent's"
    # The parent's pooled connections outlived the child, which neither used nor closed them.
    assert seen["after"] == seen["before"]
    assert not [line for line in result.stderr.splitlines() if any(t in line for t in TROUBLE)], result.stderr


def test_uvicorn_with_two_workers(server: Server) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "processes.workers_app:app", "--workers", "2", "--port", str(port)]
    process = subprocess.Popen(
        command, env=server_env(server), cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{base}/who", timeout=5).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert process.poll() is None, "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)

        def get(_: int) -> tuple[int, dict[str, int]]:
            # A new HTTP connection per request, so the two workers share the accepting.
            response = httpx2.get(f"{base}/who", timeout=30)
            return response.status_code, response.json()

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(get, range(400)))
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert [status for status, _ in answers] == [200] * 400
    workers: defaultdict[int, set[int]] = defaultdict(set)
    for _, body in answers:
        workers[body["connection"]].add(body["worker"])
    assert all(len(pids) == 1 for pids in workers.values()), "a database connection served two worker processes"
    assert len({body["worker"] for _, body in answers}) == 2, "both workers served requests"
    assert process.returncode == 0, output
    assert not [line for line in output.splitlines() if any(t in line for t in TROUBLE)], output
