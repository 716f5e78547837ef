"""The library (``libs/``) never depends on the application (``workers/``): a static check
of every module, so that the ``libs/cli.py`` <-> ``workers/python`` import circle cannot come
back. ``qe-worker run`` finds the default worker through its entry point instead."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# a module path in a string: importlib.import_module("workers.python"), ["-m", "workers.python"],
# an entry-point value "workers.python:run" (a mention in prose is no dependency)
_MODULE_NAME = re.compile(r"workers(\.\w+)+(:\w+)?|workers:\w+")


def uses_of_workers(source: str, filename: str = "<string>") -> list[str]:
    """Where ``source`` imports ``workers`` or names one of its modules, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
            names = [node.value]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0].split(":")[0] == "workers"]
    return found


def test_no_module_under_libs_uses_workers() -> None:
    modules = sorted((ROOT / "libs").rglob("*.py"))
    assert len(modules) > 20  # the walk found the package
    offenders = {str(path.relative_to(ROOT)): uses
                 for path in modules if (uses := uses_of_workers(path.read_text(), str(path)))}
    assert offenders == {}


@pytest.mark.parametrize("source", [
    "import workers",
    "import os, workers.python.worker as w",
    "from workers.python.__main__ import main",
    "from workers import python",
    "def f():\n    if True:\n        from workers.python import run",
    "import importlib\nimportlib.import_module('workers.python')",
    "__import__('workers.python.worker')",
    "subprocess.Popen([sys.executable, '-m', 'workers.python'])",
    "EntryPoint('python', 'workers.python:run', 'qe_worker.workers')",
])
def test_the_check_sees_each_way_in(source: str) -> None:
    assert uses_of_workers(source)


@pytest.mark.parametrize("source", [
    '"""Run ``python -m workers.python`` or ``qe-worker run``: the same workers."""',
    "from libs.scheduling import periodic\nperiodic.Pool(max_workers=2)",
    "from .workers import x",  # a relative import stays inside libs
    "import workersplus",
    "x = {'workers': 3}",
])
def test_the_check_lets_the_rest_through(source: str) -> None:
    assert uses_of_workers(source) == []


# -- no package reads another package's private names ---------------------------------------


def _owner(dotted: str) -> str | None:
    """The package that owns the first private part of ``dotted`` (``libs.bridge._runtime``
    -> ``libs.bridge``), or None when nothing in it is private."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            owner = ".".join(parts[:i])
            # a private name of a module belongs to the module's package (its siblings may use it)
            return owner.rpartition(".")[0] if (ROOT / owner.replace(".", "/")).with_suffix(".py").is_file() \
                else owner
    return None


def private_reads(path: Path) -> list[str]:
    """Imports in ``path`` of a private module or name owned by a package that does not
    contain ``path`` (a package may use its own private parts, and its subpackages may), as
    ``line: what``."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = here.split(".")
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            imported = [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            imported = [a.name for a in node.names]
        else:
            continue
        for dotted in imported:
            owner = _owner(dotted)
            if dotted.startswith("libs") and owner is not None and not (module + ".").startswith(owner + "."):
                found.append(f"{node.lineno}: {dotted}")
    return found


def test_no_package_reads_another_packages_private_names() -> None:
    offenders = {str(p.relative_to(ROOT)): reads for p in sorted((ROOT / "libs").rglob("*.py"))
                 if (reads := private_reads(p))}
    assert offenders == {}


def test_the_private_name_rule(tmp_path: Path) -> None:
    assert _owner("libs.bridge._runtime.fail") == "libs.bridge" and _owner("libs._runtime") == "libs"
    assert _owner("libs.scheduling.periodic._executor") == "libs.scheduling"  # a module's: its package's
    assert _owner("libs.bridge.App") is None and _owner("libs.bridge.__init__") is None
