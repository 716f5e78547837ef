"""``qe-worker call``'s view of a handler's progress reports (``specs.progress``).

On a terminal: a tqdm bar on stderr (percent, text), cleared when the answer comes. Elsewhere
(a pipe, a log file, CI): one plain line per report on stderr, so stdout keeps only the
answer. With ``--json`` nothing is shown: stdout is the one JSON document, stderr stays quiet.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from libs.bridge import Progress

__all__ = ["ProgressView"]


class ProgressView:
    """``view(progress)`` for each report; ``close()`` once the call ended."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False, bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = self.stream.isatty() if bar is None else bar
        self._tqdm: Any = None

    def __call__(self, progress: Progress) -> None:
        if self.quiet:
            return
        if not self.bar:
            percent = "" if progress.fraction is None else f"{progress.fraction:.0%} "
            print(f"progress: {percent}{progress.text}".rstrip(), file=self.stream, flush=True)
            return
        if self._tqdm is None:
            from tqdm import tqdm

            self._tqdm = tqdm(total=100, file=self.stream, leave=False, unit="%",
                              bar_format="{l_bar}{bar}| {desc}")
        if progress.fraction is not None:
            self._tqdm.n = round(progress.fraction * 100)
        self._tqdm.set_description_str(progress.text, refresh=False)
        self._tqdm.refresh()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
