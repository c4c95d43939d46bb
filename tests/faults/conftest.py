"""The fault suite: every test here is marked ``fault`` and ends with the leak check.

``pytest -m "not fault"`` skips the suite for a quick local run; CI runs it
(in the matrix environments where hatch.toml does not list it in ``DB_TEST_SKIP``).
The numbers the tests record are printed as a table at the end of the run
(and written as Markdown to ``$DB_TEST_FAULT_REPORT`` when that is set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbtests.leaks import FaultReport, leaks, tracking

_REPORT = FaultReport()
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.fault)


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it left a connection checked out, abandoned, or idle in transaction."""
    recorded = len(_REPORT.records)
    with tracking() as usage:
        yield
        found = leaks(usage)
    _REPORT.count_leaks(since=recorded, leaked=len(found))
    assert not found, f"{request.node.name} left leaks:\n  " + "\n  ".join(found)


@pytest.fixture
def fault_report() -> FaultReport:
    """Where a test records how many faults it injected and how many the system recovered from."""
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORT.records:
        return
    table = _REPORT.markdown()
    terminalreporter.write_sep("=", "fault report")
    terminalreporter.write_line(table)
    target = os.environ.get("DB_TEST_FAULT_REPORT")
    if target:
        Path(target).write_text(table + "\n")
