"""The loop-blocked detector: one WARNING per site that held the loop past the threshold."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import pytest

from libs.bridge._blocked import BlockedWatch, site_of


def hog_the_loop() -> None:
    time.sleep(0.3)


def test_site_of_names_the_innermost_own_frame() -> None:
    assert site_of(sys._getframe()).startswith("test_site_of_names_the_innermost_own_frame (test_blocked.py:")
    assert site_of(None) == "unknown"


def test_a_blocking_callback_is_logged_once_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        watch = BlockedWatch(asyncio.get_running_loop(), threshold_ms=100)
        watch.start()
        try:
            await asyncio.sleep(0.12)
            for _ in range(2):
                hog_the_loop()
                await asyncio.sleep(0.12)
            await asyncio.sleep(0.12)  # a loop that is not blocked logs nothing
        finally:
            watch.stop()

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "libs.bridge._blocked"]
    assert len(lines) == 1, lines
    assert "hog_the_loop (test_blocked.py:" in lines[0] and "blocked for" in lines[0]
