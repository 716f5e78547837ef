"""``qe-worker run`` and ``python -m workers.python``: one set of options, and the worker
found through its entry point (group ``qe_worker.workers``), never imported by name."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from libs import cli

_FAKE_WORKER = '''
calls = []

def run(options):
    calls.append(options)
    return 7
'''


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` in which ``install(dist, entry_points_txt)`` installs a
    distribution (its metadata only), as pip would."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "qe_fake_worker.py").write_text(_FAKE_WORKER)
    monkeypatch.delitem(sys.modules, "qe_fake_worker", raising=False)
    yield tmp_path
    sys.modules.pop("qe_fake_worker", None)


def install(where: Path, dist: str, entry_points_txt: str) -> None:
    info = where / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points_txt)


def test_the_default_worker_is_this_packages_entry_point() -> None:
    from workers.python import run

    (found,) = entry_points(group=cli.WORKERS_GROUP, name="python")
    assert found.value == "workers.python:run" and found.load() is run


def test_run_calls_the_entry_point_with_the_options_and_exits_with_its_status(installed, monkeypatch) -> None:
    install(installed, "fake_worker", "[qe_worker.test_workers]\npython = qe_fake_worker:run\n")
    monkeypatch.setattr(cli, "WORKERS_GROUP", "qe_worker.test_workers")
    assert cli.main(["run", "--resource", "r1", "--public"]) == 7
    assert cli.main(["run", "--maintenance"]) == 7
    import qe_fake_worker

    assert qe_fake_worker.calls == [cli.RunOptions(resource="r1", public=True, maintenance=False),
                                    cli.RunOptions(resource="python", public=False, maintenance=True)]


@pytest.mark.parametrize("group, words", [
    ("qe_worker.test_none", "no worker 'python' is installed (entry point group 'qe_worker.test_none')"),
    ("qe_worker.test_broken", "cannot load worker 'python' (qe_no_such_module:run): No module named"),
    ("qe_worker.test_twice", "more than one worker 'python' is installed"),
])
def test_run_without_a_loadable_worker_is_one_line_and_exit_2(installed, monkeypatch, capsys, group, words) -> None:
    install(installed, "broken_worker", "[qe_worker.test_broken]\npython = qe_no_such_module:run\n"
                                        "[qe_worker.test_twice]\npython = qe_fake_worker:run\n")
    install(installed, "other_worker", "[qe_worker.test_twice]\npython = qe_fake_worker:run\n")
    monkeypatch.setattr(cli, "WORKERS_GROUP", group)
    assert cli.main(["run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"qe-worker: {words}") and err.count("\n") == 1, err


def _help(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_both_commands_take_the_same_options_with_descriptions(capsys, monkeypatch) -> None:
    from workers.python.__main__ import main as worker_main

    monkeypatch.setenv("COLUMNS", "100")
    helps = [_help(cli.main, ["run", "--help"], capsys), _help(worker_main, ["--help"], capsys)]
    options = []
    for text in helps:
        assert "until Ctrl+C or SIGTERM" in text  # the description
        section = text.split("options:\n")[1].split("\n\n")[0].rstrip()
        options.append(section)
    assert options[0] == options[1]
    for option in ("--resource", "--public", "--maintenance", "--workers"):
        assert option in options[0]
    assert "job-history cleanup" in options[0]


def test_a_bad_resource_is_refused_by_both(capsys) -> None:
    from workers.python.__main__ import main as worker_main

    for main, argv in ((cli.main, ["run", "--resource", "a/b"]), (worker_main, ["--resource", "a/b"])):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "not a valid resource" in capsys.readouterr().err


def test_workers_n_reaches_the_worker_and_must_be_a_positive_number(installed, monkeypatch, capsys) -> None:
    install(installed, "fake_worker", "[qe_worker.test_workers]\npython = qe_fake_worker:run\n")
    monkeypatch.setattr(cli, "WORKERS_GROUP", "qe_worker.test_workers")
    assert cli.main(["run", "--workers", "3"]) == 7
    import qe_fake_worker

    assert qe_fake_worker.calls == [cli.RunOptions(resource="python", public=False, maintenance=False, workers=3)]
    for bad in ("0", "-1", "many"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["run", "--workers", bad])
        assert exited.value.code == 2
        assert "is not a number of workers" in capsys.readouterr().err


def test_workers_is_an_option_of_the_default_worker_not_of_a_script(tmp_path, capsys) -> None:
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    assert cli.main(["run", "--workers", "2", str(script)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--workers: options of the default worker, not of a script" in err
