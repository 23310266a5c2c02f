"""The package's import structure: no import cycle between ``ssdn`` modules, and importing any of them
changes no global state (OmegaConf resolvers are registered by ``ssdn.config.compose.prepare_hydra``, not at import).

How the import graph is built (``import_graph``): every ``import`` and ``from ... import`` statement of every
module, at module level or inside a function (a cycle hidden in a function is still a design cycle), gives an
edge to the module that must be *executed* to provide the name:

- ``import ssdn.a.b`` and ``from ssdn.a import b`` where ``ssdn/a/b.py`` exists: an edge to ``ssdn.a.b``.
  Python also runs the parent packages' ``__init__`` first, but that is no edge: a package ``__init__`` that
  imports its children while a child is being imported is how packages work, not a cycle.
- ``from ssdn.a import name`` where ``name`` is not a submodule: the name comes from ``ssdn/a/__init__.py``. If
  that ``__init__`` only re-exports it (``from ssdn.a.sub import name``), the edge goes to ``ssdn.a.sub``, the
  module that defines it; if the ``__init__`` defines it, the edge goes to ``ssdn.a`` itself, and a child of
  ``ssdn.a`` doing so *is* a cycle (the child needs its half-imported package to be complete).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "ssdn"

Edge = tuple[str, str, str]  # importer, imported, "file:line" of the statement


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (sorted)."""
    root = package_dir.parent
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module named by a (possibly relative) ``from X import`` statement."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _reexports(modules: dict[str, Path]) -> dict[tuple[str, str], str]:
    """(package, name) -> the ``ssdn`` module a package ``__init__`` imports ``name`` from."""
    found: dict[tuple[str, str], str] = {}
    for module, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, True, node)
                for alias in node.names:
                    if source in modules:
                        found[(module, alias.asname or alias.name)] = source
    return found


def import_graph(modules: dict[str, Path]) -> list[Edge]:
    """Every edge between package modules, as described in the module docstring (self-edges dropped)."""
    root = modules["ssdn"].parents[1]
    reexports = _reexports(modules)
    edges: list[Edge] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name in modules]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, is_package, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in modules:
                        targets.append(sub)
                    elif source in modules:
                        targets.append(reexports.get((source, alias.name), source))
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            edges += [(module, t, where) for t in targets if t != module]
    return edges


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One cycle of the graph as its edges in order, or None (depth-first search, deterministic order)."""
    graph: dict[str, list[Edge]] = {}
    for edge in sorted(edges):
        graph.setdefault(edge[0], []).append(edge)
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for edge in graph.get(node, []):
            target = edge[1]
            if state.get(target) == 1:  # on the current path, and not ``node`` (no self-edges)
                start = next(i for i, e in enumerate(path) if e[0] == target)
                return [*path[start:], edge]
            if target not in state:
                path.append(edge)
                found = visit(target)
                if found:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_reports_the_cycle_and_follows_reexports(tmp_path: Path) -> None:
    pkg = tmp_path / "ssdn"
    (pkg / "x").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "x" / "__init__.py").write_text(
        "from ssdn.x import child\nfrom ssdn.x.base import Base\n\nREGISTRY = {}\n"
    )
    (pkg / "x" / "base.py").write_text("class Base: ...\n")
    (pkg / "x" / "child.py").write_text("from ssdn.x import Base\n")  # a re-export: no cycle
    (pkg / "a.py").write_text("def f():\n    from ssdn import b\n")  # inside a function: still an edge
    (pkg / "b.py").write_text("import ssdn.a\n")
    modules = module_files(pkg)
    edges = import_graph(modules)
    assert ("ssdn.x.child", "ssdn.x.base") in {(a, b) for a, b, _ in edges}
    assert [(a, b) for a, b, _ in find_cycle(edges) or []] == [("ssdn.a", "ssdn.b"), ("ssdn.b", "ssdn.a")]
    (pkg / "x" / "child.py").write_text("from ssdn.x import REGISTRY\n")  # defined in the __init__: a cycle
    (pkg / "b.py").write_text("")
    edges = import_graph(module_files(pkg))
    assert [(a, b) for a, b, _ in find_cycle(edges) or []] == [
        ("ssdn.x", "ssdn.x.child"),
        ("ssdn.x.child", "ssdn.x"),
    ]


def test_no_import_cycle_between_ssdn_modules() -> None:
    modules = module_files()
    assert {"ssdn.train", "ssdn.config.compose", "ssdn.noise", "ssdn.training.loggers"} <= set(modules)
    edges = import_graph(modules)
    assert ("ssdn.train", "ssdn.config.compose") in {(a, b) for a, b, _ in edges}
    cycle = find_cycle(edges)
    assert cycle is None, (
        "import cycle: " + " -> ".join(f"{a} ({where})" for a, _, where in cycle) + (f" -> {cycle[0][0]}")
    )


#: Imports every module on its own (the ssdn modules already imported are dropped first, so each import runs
#: from scratch, as in a fresh interpreter), then reports the resolvers registered and the files created.
_IMPORT_ALL = """
import importlib, os, sys
from omegaconf import OmegaConf
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "ssdn" or m.startswith("ssdn.")]:
        del sys.modules[loaded]
    importlib.import_module(name)
print(sorted(r for r in ("ssdn_row", "ssdn_noise_tag", "ssdn_num_gpus") if OmegaConf.has_resolver(r)))
print(sorted(os.listdir(".")))
"""


@pytest.mark.parametrize(
    "modules", [["ssdn.train", "ssdn.config.compose"], "all"], ids=["train+config", "all"]
)
def test_importing_registers_no_resolver_and_writes_nothing(tmp_path: Path, modules: list[str] | str) -> None:
    names = sorted(module_files()) if modules == "all" else modules
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR.parent), WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *names],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    resolvers, files = proc.stdout.strip().splitlines()[-2:]
    assert resolvers == "[]", f"importing {names} registered OmegaConf resolvers {resolvers}"
    assert files == "[]", f"importing {names} created {files} in the working directory"


def test_prepare_hydra_registers_the_resolvers(tmp_path: Path) -> None:
    code = (
        "from omegaconf import OmegaConf; from ssdn.config.compose import prepare_hydra; "
        "prepare_hydra(); prepare_hydra(); "
        "print(all(OmegaConf.has_resolver(r) for r in ('ssdn_row', 'ssdn_noise_tag', 'ssdn_num_gpus')))"
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR.parent))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "True", proc.stderr[-4000:]
