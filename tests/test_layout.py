"""The package layout's promises (docs/architecture.md): dependencies point one way, no
import cycles, every module importable on its own, short one-purpose files."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "nasprune"

#: package -> the nasprune packages it must not import (the dependency rule).
FORBIDDEN = {
    "core": {"data", "train", "search", "deploy", "report", "pipeline", "cli"},
    "data": {"core", "train", "search", "deploy", "report", "pipeline", "cli"},
    "train": {"search", "deploy", "report", "pipeline", "cli"},
    "search": {"deploy", "report", "pipeline", "cli"},
    "deploy": {"search", "report", "pipeline", "cli"},
    "report": {"deploy", "pipeline", "cli"},
}
#: Modules everyone may import: no torch, no stage logic. Two groups (the run directory,
#: the configuration) and the leaf utilities.
SHARED = {"rundir", "config", "errors", "files", "registry", "progress"}
#: The one part of a stage the shared modules may import: its registries' names and plain
#: constants (``config`` checks every name against them without loading torch).
NAMES = {"nasprune.core", "nasprune.train.strategies", "nasprune.train.recovery",
         "nasprune.search.searchers", "nasprune.search.executors",
         "nasprune.search.executors.spec", "nasprune.deploy.export.backends",
         "nasprune.deploy.export.format"}
MAX_LINES = 330


def _name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, on_import: bool = False) -> set[str]:
    """Every nasprune module ``path`` imports, at the top or inside a function (only those
    run on import, with ``on_import``), except under ``if TYPE_CHECKING:`` (annotations)."""
    tree = ast.parse(path.read_text())
    skip = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
            and getattr(stmt.test, "id", None) == "TYPE_CHECKING"
            for body in stmt.body for node in ast.walk(body)}
    if on_import:
        skip |= {id(node) for stmt in ast.walk(tree)
                 if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
                 for node in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != "nasprune"}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_dependencies_point_one_way():
    wrong = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in sorted(deps)
             if _area(d) in FORBIDDEN.get(_area(m), set())]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli():
    assert not [m for m, deps in GRAPH.items() if "nasprune.cli" in deps
                and not m.startswith("nasprune.cli") and m != "nasprune.__main__"]


def test_shared_modules_import_no_stage_beyond_the_registries_names():
    stages = set(FORBIDDEN) | {"pipeline", "cli"}
    wrong = [f"{m} imports {d}" for m, deps in GRAPH.items() if _area(m) in SHARED
             for d in deps if _area(d) in stages and d not in NAMES]
    assert not wrong, "\n".join(wrong)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def test_the_registries_names_import_only_shared_modules_and_names():
    """What ``NAMES`` allows is light: importing it, and the packages above it that Python
    imports first, imports nothing but shared modules and other names."""
    wrong = [f"{m} imports {d}" for name in sorted(NAMES) for m in [*_parents(name), name]
             for d in sorted(_imports(MODULES[m], on_import=True) - {m})
             if _area(d) not in SHARED and d not in NAMES]
    assert not wrong, "\n".join(wrong)


def _cycle() -> list[str] | None:
    """A cycle among modules (a package counts as its ``__init__``), if one exists."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle or [])


def test_files_are_short():
    long = [f"{p.relative_to(SRC)}: {n} lines" for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_every_module_imports():
    """Every module imports in a fresh interpreter (the static test above finds cycles that
    an import order would hide); the locustfile is run by Locust, not imported."""
    names = [m for m in MODULES if not m.endswith("locustfile") and m != "nasprune.__main__"]
    script = ("import importlib, sys\n"
              f"for name in {names!r}:\n"
              "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("module", ["nasprune", "nasprune.config", "nasprune.cli",
                                    "nasprune.rundir.fingerprints"])
def test_light_modules_load_no_torch(module):
    """The CLI checks a command before any work starts: its modules import no torch, and
    neither they nor the configuration pandas."""
    done = subprocess.run([sys.executable, "-c", f"import sys, {module}; "
                           "print([m for m in ('torch', 'pandas') if m in sys.modules])"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
