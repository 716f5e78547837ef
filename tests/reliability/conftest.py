"""Measurements that reliability tests report even when they pass.

Why: these tests prove guarantees with generous bounds only (no timing asserts), so the
numbers behind them -- how many calls got results, how long a worker took to answer again
after its server came back -- would otherwise be invisible. A test asks for ``report`` and
calls it with one line per measurement; the lines appear in pytest's terminal summary under
"reliability measurements", also with ``-q`` and without ``-s``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_LINES = pytest.StashKey[dict[str, list[str]]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``report("results: 1,234")``: show this line under the test's name in the summary."""
    lines = request.config.stash.setdefault(_LINES, {}).setdefault(request.node.nodeid, [])
    return lines.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    by_test = config.stash.get(_LINES, {})
    if not any(by_test.values()):
        return
    terminalreporter.section("reliability measurements")
    for nodeid, lines in by_test.items():
        terminalreporter.line(nodeid)
        for line in lines:
            terminalreporter.line(f"    {line}")
