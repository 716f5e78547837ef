"""The test kit as a user meets it (issue #14, point 6): examples/test_my_worker.py and
examples/my_worker.py copied into a folder of their own and run with ``python -m pytest``
there, in a subprocess. Only the installed package is importable (not this repository's
``tests``), and the fixtures come from the plugin's entry point alone, so this proves that
installing qe-worker is all a user needs. A copy of the worker with a bug must fail, in
memory and on the real server both, or the passing run would prove nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FILES = ("my_worker.py", "test_my_worker.py")
RUN_TIMEOUT = 180.0  # s, one pytest run: a Prosody, one worker process, six tests

pytestmark = pytest.mark.timeout(3 * RUN_TIMEOUT + 30)


def _project(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in FILES:
        (folder / file).write_text((EXAMPLES / file).read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def _pytest(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pytest -q ARGS`` in ``folder``, with none of our test settings: no
    PYTHONPATH, no QE_* account, no PYTEST_* options (``env`` on top)."""
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith(("QE_", "PYTEST_", "PYTHONPATH")) and k != "RESOURCE"}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def _outcome(run: subprocess.CompletedProcess[str]) -> str:
    return f"exit {run.returncode}\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"


def test_the_example_passes_as_a_user_runs_it_in_strict_and_auto_mode(tmp_path: Path) -> None:
    folder = _project(tmp_path, "project")
    assert subprocess.run([sys.executable, "-c", "import tests"], cwd=folder, capture_output=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).returncode != 0
    strict = _pytest(folder)  # pytest-asyncio's default mode, no configuration at all
    assert strict.returncode == 0, _outcome(strict)
    assert re.search(r"\b6 passed\b", strict.stdout) and "skipped" not in strict.stdout, _outcome(strict)
    auto = _pytest(folder, "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function",
                   "-W", "error")  # and no warning from us
    assert auto.returncode == 0, _outcome(auto)
    assert re.search(r"\b6 passed\b", auto.stdout), _outcome(auto)


def test_a_broken_worker_fails_in_memory_and_on_the_real_server(tmp_path: Path) -> None:
    folder = _project(tmp_path, "broken")
    worker = folder / "my_worker.py"
    source = worker.read_text(encoding="utf-8")
    assert 'specs.body["x"] + specs.body["y"]' in source
    worker.write_text(source.replace('specs.body["x"] + specs.body["y"]', 'specs.body["x"] - specs.body["y"]'),
                      encoding="utf-8")
    run = _pytest(folder)
    assert run.returncode == 1, _outcome(run)
    failed = set(re.findall(r"^FAILED test_my_worker\.py::(\w+)", run.stdout, re.MULTILINE))
    assert failed == {"test_add", "test_on_a_real_server"}, _outcome(run)


def test_docs_testing_md_shows_the_example_files() -> None:
    """docs/testing.md shows the example worker whole (test_docs.py runs it as a worker) and
    pieces of its tests (not run there): each must be in the file, so that what the page shows
    is what this module runs."""
    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    worker = (EXAMPLES / "my_worker.py").read_text(encoding="utf-8")
    shown = re.search(r"<!-- doctest: worker [^\n]*-->\n```python\n(.*?)```", doc, re.DOTALL)
    assert shown is not None and shown.group(1) == worker[worker.index("from libs.startup"):]
    blocks = re.findall(r'<!-- doctest: skip reason="[^"]*?(examples/\w+\.py)[^"]*" -->\n```python\n(.*?)```',
                        doc, re.DOTALL)
    assert len(blocks) >= 3
    for name, code in blocks:
        example = (ROOT / name).read_text(encoding="utf-8")
        for piece in textwrap.dedent(code).strip().split("\n# ...\n"):
            assert piece.strip() in example, f"docs/testing.md shows code that is not in {name}:\n{piece}"


def test_without_prosody_the_real_server_tests_are_skipped_saying_why(tmp_path: Path) -> None:
    folder = _project(tmp_path, "no-prosody")
    run = _pytest(folder, "-rs", env={"PATH": str(Path(sys.executable).parent)})  # no prosody on PATH
    assert run.returncode == 0, _outcome(run)
    assert re.search(r"\b5 passed, 1 skipped\b", run.stdout), _outcome(run)
    assert "qe_server needs Prosody: prosody not found" in run.stdout, _outcome(run)


async def test_a_worker_that_does_not_come_up_fails_with_its_output(qe_real_worker, tmp_path: Path) -> None:
    from libs.testing import WorkerFailed

    (tmp_path / "exits.py").write_text('print("missing a setting")\nraise SystemExit(3)\n', encoding="utf-8")
    with pytest.raises(WorkerFailed, match=r"(?s)exits\.py exited with status 3 before it answered ping.*missing a setting"):
        await qe_real_worker(str(tmp_path / "exits.py"))
    (tmp_path / "silent.py").write_text("import asyncio\nasyncio.get_event_loop().run_forever()\n", encoding="utf-8")
    with pytest.raises(WorkerFailed, match=r"silent\.py did not answer ping at worker@localhost/python within 1 s"):
        await qe_real_worker(str(tmp_path / "silent.py"), timeout=1)  # no App: nobody logs in
