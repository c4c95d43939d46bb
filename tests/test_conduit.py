"""The Conduit example's own tests (examples/conduit), run as its README says: ``python -m pytest`` from its folder.

One run per backend, with only ``DB_*`` pointing at a database of this test run:
the example's suite (the RealWorld API over real HTTP, its concurrency
properties, its migrations) must pass whole, with nothing skipped on the servers,
and leave no test database behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dbtests.projects import user_environment
from dbtests.servers import Server, database_exists

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "conduit"
TIMEOUT = 600


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _passed(result: subprocess.CompletedProcess[str], *, skips_allowed: bool) -> int:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    counts = dict((word, int(number)) for number, word in re.findall(r"(\d+) (passed|failed|skipped|error)", output))
    assert not counts.get("failed"), output[-6000:]
    assert not counts.get("error"), output[-6000:]
    if not skips_allowed:
        assert not counts.get("skipped"), output[-6000:]
    return counts.get("passed", 0)


@pytest.mark.slow
def test_conduit_suite_passes_on_sqlite(tmp_path: Path) -> None:
    configured = tmp_path / "app.db"
    result = _run(user_environment(DB_TYPE="sqlite", DB_NAME=str(configured)))
    # SQLite has one writer at a time: the suite says what it leaves to the servers.
    assert _passed(result, skips_allowed=True) >= 50
    assert not configured.exists(), "the configured database was created: the tests must use their own"
    assert not (tmp_path / "test_app.db").exists(), "the test database was left behind"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_conduit_suite_passes_on_the_servers(request: pytest.FixtureRequest, backend: str) -> None:
    server: Server = request.getfixturevalue(f"{backend}_server")
    scheme = "postgresql" if backend == "postgres" else "mysql"
    url = f"{scheme}://{server.user}@{server.host}:{server.port}/{server.database}"
    result = _run(user_environment(DB_URL=url))
    assert _passed(result, skips_allowed=False) >= 50
    assert not database_exists(backend, f"test_{server.database}"), "the test database was left behind"
