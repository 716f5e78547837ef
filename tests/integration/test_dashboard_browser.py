"""``qe-worker dashboard`` in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium): against the private Prosody with two live default
workers, the page lists both online, and after calls the command's row and its calls chart
update. The browser is waited on through the DOM (``WebDriverWait``), never by sleeping.

A missing browser skips with the reason, except under CI (``CI`` set, as ``.ci/run`` does),
where ``./run test`` installs it: there it fails, so that the test cannot go green unseen.
``QE_DASHBOARD_SCREENSHOT=1`` also writes the page to docs/dashboard.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from libs.bridge import wait_answering
from tests.support.workers import ROOT, WorkerProcess, default_worker

_WAIT_S = 20.0  # bound of every wait on the page


def _browser() -> tuple[str, str]:
    """Chromium and its driver, or the test skips (fails under CI) saying what is missing."""
    missing = []
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None:
        missing.append("chromium (apt-get install chromium)")
    if driver is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        reason = "the browser test needs " + ", ".join(missing) + "; ./run test installs them as root"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    assert chromium is not None and driver is not None
    return chromium, driver


def _start_chrome(chromium: str, driver: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # Debian's: Selenium Manager must not fetch a browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1050", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


async def _until(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Poll the page (in a thread: the test's XMPP client lives on this loop) until
    ``condition(browser)`` is truthy; its value. AssertionError naming ``what`` after
    ``_WAIT_S`` seconds."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return await asyncio.to_thread(WebDriverWait(browser, _WAIT_S, poll_frequency=0.1).until, condition)
    except TimeoutException:
        raise AssertionError(f"not seen on the page within {_WAIT_S:g} s: {what}\n"
                             f"{browser.find_element('tag name', 'body').text[:2000]}") from None


def _cards(browser: Any) -> dict[str, str]:
    """Each listed worker's status, read in one script (the page redraws between two reads)."""
    found: dict[str, str] = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('section.worker')]"
        ".map(s => [s.dataset.jid, s.dataset.status]));")
    return found


def _row(jid: str, cmd: str) -> Callable[[Any], Any]:
    """The row of ``cmd`` in the card of ``jid``: (total calls, points in its calls chart)."""
    def find(browser: Any) -> tuple[int, int] | None:
        found = browser.execute_script(
            "const card = [...document.querySelectorAll('section.worker')].find(s => s.dataset.jid === arguments[0]);"
            "const row = card && [...card.querySelectorAll('tr[data-cmd]')].find(r => r.dataset.cmd === arguments[1]);"
            "const svg = row && row.querySelector('svg.chart[data-kind=\"calls\"]');"
            "return row ? [Number(row.dataset.calls), Number(svg.dataset.points),"
            " svg.querySelectorAll('polyline').length] : null;", jid, cmd)
        return None if found is None else (found[0], found[1] if found[2] else 0)
    return find


async def _screenshot(browser: Any, client: Any, jid_one: str, jid_two: str) -> None:
    """docs/dashboard.png: a few rounds of calls of varying rates first, each waited out by
    its point on the page, so that the charts have lines to show."""
    from libs.bridge import RemoteError

    for rate in (5, 15, 30, 10, 25, 40, 20, 35):
        _calls, points = _row(jid_one, "echo")(browser) or (0, 0)
        for i in range(rate):
            await client.call(jid_one if i % 3 else jid_two, "echo", {"i": i}, timeout=5)
        if rate % 10 == 5:
            with contextlib.suppress(RemoteError):
                await client.call(jid_one, "no-such-command", timeout=5)  # errors, charted as _other
        await _until(browser, lambda b, p=points: (r := _row(jid_one, "echo")(b)) and r[1] > p, "a new point")
    await asyncio.to_thread(browser.save_screenshot, str(ROOT / "docs" / "dashboard.png"))


async def test_the_page_lists_two_live_workers_and_charts_calls(
        prosody: Any, accounts: dict[str, tuple[str, str]], tmp_path: Path, login: Any) -> None:
    chromium, driver = _browser()
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    one, jid_one = default_worker(prosody, accounts, "dash-one", tmp_path / "one")
    two, jid_two = default_worker(prosody, accounts, "dash-two", tmp_path / "two")
    # the dashboard logs in with the workers' own account: it sees them by presence alone
    dashboard = WorkerProcess(["-m", "libs.cli", "dashboard", "--port", "0", "--interval", "0.5"],
                              prosody.env("worker", accounts["worker"][1]), tmp_path / "dashboard.log")
    async with one, two:
        client = await login("client")
        await asyncio.gather(wait_answering(client, jid_one, 20), wait_answering(client, jid_two, 20))
        async with dashboard:
            await dashboard.wait_lines(lambda lines: any(x.startswith("dashboard: http://") for x in lines), 20)
            url = next(x for x in dashboard.lines if x.startswith("dashboard: ")).split(" ", 1)[1]
            assert url.startswith("http://127.0.0.1:")  # loopback by default, hence no token
            browser = await asyncio.to_thread(_start_chrome, chromium, driver)
            try:
                await asyncio.to_thread(browser.get, url)
                await _until(browser, lambda b: _cards(b).get(jid_one) == _cards(b).get(jid_two) == "online",
                             "both workers online")
                assert _row(jid_one, "echo")(browser) is None  # no call yet

                for i in range(20):
                    await client.call(jid_one, "echo", {"i": i}, timeout=5)
                calls, points = await _until(browser, lambda b: (r := _row(jid_one, "echo")(b)) and r[0] == 20 and r,
                                             "20 echo calls on the first worker")
                await client.call(jid_one, "schedule", {"cmd": "ping", "trigger": {"every": "1s"}}, timeout=5)
                for i in range(20):
                    await client.call(jid_one, "echo", {"i": i}, timeout=5)
                await _until(browser, lambda b: (r := _row(jid_one, "echo")(b)) and r[0] == 40 and r[1] > points,
                             "40 echo calls and a calls chart with more points")
                assert _row(jid_two, "echo")(browser) is None  # the other worker got none
                await _until(browser, lambda b: b.execute_script(
                    "return document.querySelectorAll('tr[data-job]').length") == 1, "the scheduled job listed")
                if os.environ.get("QE_DASHBOARD_SCREENSHOT"):
                    await _screenshot(browser, client, jid_one, jid_two)

                await two.aclose()  # SIGTERM: it leaves the server, whose presence says so
                await _until(browser, lambda b: _cards(b).get(jid_two) == "offline", "the stopped worker offline")
                assert _cards(browser).get(jid_one) == "online"
                dashboard.signal(signal.SIGTERM)  # a clean stop, with the page's event stream open
                assert await dashboard.wait(10) == 0, dashboard.log()
                assert "Traceback" not in dashboard.log() and "ERROR" not in dashboard.log(), dashboard.log()
            finally:
                await asyncio.to_thread(browser.quit)
