"""Measurements a test reports (never asserts) in pytest's terminal summary.

Why: reliability tests measure things worth reading (time to recover from a fault) that
must not be asserted on a shared machine. Printing from a test is swallowed when it passes;
a table in the terminal summary shows with ``-q`` and when every test passes.
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["SummaryTable", "summary_table"]


class SummaryTable:
    """A pytest plugin holding one table; rows are added by tests, printed once at the end."""

    def __init__(self, title: str, header: tuple[str, ...], note: str = "") -> None:
        self.title = title
        self.header = header
        self.note = note
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.header):
            raise ValueError(f"{len(cells)} cells for {len(self.header)} columns")
        self.rows.append(tuple(str(c) for c in cells))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        widths = [max(len(r[i]) for r in (self.header, *self.rows)) for i in range(len(self.header))]
        terminalreporter.section(self.title)
        for row in (self.header, *self.rows):
            terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if self.note:
            terminalreporter.write_line(self.note)


def summary_table(config: pytest.Config, title: str, header: tuple[str, ...], note: str = "") -> SummaryTable:
    """The session's table named ``title`` (registered as a plugin the first time)."""
    name = f"summary-table:{title}"
    plugin = config.pluginmanager.get_plugin(name)
    if plugin is None:
        plugin = SummaryTable(title, header, note)
        config.pluginmanager.register(plugin, name)
    assert isinstance(plugin, SummaryTable)
    return plugin
