"""``qe-worker call``'s progress view: plain lines off a terminal, a bar on one, nothing with --json."""

from __future__ import annotations

import io

from libs._cli_progress import ProgressView
from libs.bridge import Progress


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    view = ProgressView(out)
    for progress in (Progress(0.25, "a quarter"), Progress(None, "no idea"), Progress(1.0, "")):
        view(progress)
    view.close()
    assert out.getvalue().splitlines() == ["progress: 25% a quarter", "progress: no idea", "progress: 100%"]


def test_a_bar_on_a_terminal_and_nothing_when_quiet() -> None:
    out = io.StringIO()
    view = ProgressView(out, bar=True)
    view(Progress(0.4, "resized 40 of 100"))
    assert "40%" in out.getvalue() and "resized 40 of 100" in out.getvalue()
    view.close()
    quiet = io.StringIO()
    view = ProgressView(quiet, quiet=True, bar=True)
    view(Progress(0.5, "x"))
    view.close()
    assert quiet.getvalue() == ""
