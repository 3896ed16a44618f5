"""Imports run one way (issues 10, 15), and the package's folders are the layers: helpers/ -> artifact/ ->
models/ -> export/ -> engines/ -> runtime/ -> jobs/ -> cli/ (plus entry.py).

Every module's imports are read with ``ast`` -- module-level, function-level and ``TYPE_CHECKING``
imports alike, plus ``lazy_import("dvit_deploy....")`` / ``importlib.import_module(...)`` strings --
and each is checked against the layer table below: a package may import its own layer and the ones
beneath, never one above. The torch-free modules are then imported in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dvit_deploy"

# Lowest first. A name is a top-level module or package of dvit_deploy ("__init__": the package
# itself, i.e. ``__version__``). Every module must be placed (a new one is placed here on purpose).
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("bottom", frozenset({"__init__", "helpers"})),
    ("artifact", frozenset({"artifact"})),
    ("models", frozenset({"models"})),
    ("export", frozenset({"export"})),
    ("engines", frozenset({"engines"})),
    ("runtime", frozenset({"runtime"})),
    ("jobs", frozenset({"jobs"})),
    ("cli", frozenset({"cli", "entry", "__main__"})),
)
RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}
LAYER_NAME = {name: LAYERS[rank][0] for name, rank in RANK.items()}

# Upward imports that exist today in modules owned elsewhere, each with the reason it is tolerated
# until its owner moves it. Nothing may be added here without the same: an entry names one
# importing module and one imported module exactly.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str:
    """The dvit_deploy module an import names (``from .. import __version__`` -> ``dvit_deploy``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path) -> set[str]:
    """Every dvit_deploy module ``module`` imports, wherever in the file the import sits."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from . import manifest`` imports a submodule; ``from .x import name`` imports x.
            targets = [f"{stem}.{alias.name}" for alias in node.names] if not node.module else [stem]
            if node.module:
                targets += [f"{stem}.{alias.name}" for alias in node.names if f"{stem}.{alias.name}" in MODULES]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("lazy_import", "import_module") and isinstance(node.args[0].value, str):
                targets = [node.args[0].value.split(":")[0]]
        found.update(_resolve(t) for t in targets if t == "dvit_deploy" or t.startswith("dvit_deploy."))
    found.discard(module)
    return found


def _unit(module: str) -> str:
    """The layer-table name of a module: its top-level package or module under dvit_deploy."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_module_is_placed_in_a_layer():
    unplaced = sorted({_unit(m) for m in MODULES} - set(RANK))
    assert not unplaced, f"place these in LAYERS (tests/test_layering.py): {unplaced}"


def test_imports_never_go_up_a_layer():
    upward = []
    for module, imported in GRAPH.items():
        for target in sorted(imported):
            if RANK[_unit(target)] > RANK[_unit(module)] and (module, target) not in KNOWN_EXCEPTIONS:
                upward.append(f"{module} ({LAYER_NAME[_unit(module)]}) imports {target} "
                              f"({LAYER_NAME[_unit(target)]})")
    assert not upward, "imports must run " + " -> ".join(n for n, _ in LAYERS) + " (lower first):\n" + "\n".join(upward)


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for module, imported in GRAPH.items():
        for target in imported:
            if _unit(target) != _unit(module) and (module, target) not in KNOWN_EXCEPTIONS:
                edges.setdefault(_unit(module), set()).add(_unit(target))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            unit = todo.pop()
            if unit == goal:
                return True
            if unit not in seen:
                seen.add(unit)
                todo.extend(edges.get(unit, ()))
        return False

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and reaches(b, a))
    assert not cycles, f"packages import each other: {cycles}"


def test_engines_never_import_runtime():
    """The loop issue 10 named: engines.build imported runtime (package_present, now lazy.available) while the runner imports engines."""
    offenders = [m for m in GRAPH if _unit(m) == "engines" and any(_unit(t) == "runtime" for t in GRAPH[m])]
    assert not offenders


def test_the_tensorrt_runner_needs_neither_the_exporter_nor_the_models():
    assert not {_unit(t) for t in GRAPH["dvit_deploy.runtime.trt_runner"]} & {"export", "models"}


def test_known_exceptions_name_real_modules():
    for module, target in KNOWN_EXCEPTIONS:
        assert module in MODULES and target in MODULES, (module, target)


_IMPORT_AND_REPORT = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in ("torch", "timm", "torchvision", "onnx", "onnxruntime", "tensorrt")
                        if m in sys.modules)))
"""


@pytest.mark.parametrize("module, also_free_of", [
    ("dvit_deploy.engines.targets", {"onnx", "onnxruntime", "tensorrt"}),
    ("dvit_deploy.engines.build_plan", {"onnx", "onnxruntime", "tensorrt"}),
    ("dvit_deploy.engines.build_options", {"onnx", "onnxruntime", "tensorrt"}),
    ("dvit_deploy.jobs.export", {"onnx", "onnxruntime", "tensorrt"}),  # its refusals come before the heavy imports
    ("dvit_deploy.jobs.build", {"onnx", "onnxruntime", "tensorrt"}),
    ("dvit_deploy.jobs.doctor", {"onnx", "onnxruntime", "tensorrt"}),
    ("dvit_deploy.jobs.ship", {"onnx", "onnxruntime", "tensorrt"}),
    ("dvit_deploy.artifact", set()),
    ("dvit_deploy.artifact.names", set()),
    ("dvit_deploy.artifact.manifest", set()),
    ("dvit_deploy.helpers.lazy", {"onnx", "onnxruntime", "tensorrt"}),
])
def test_module_imports_without_torch(module, also_free_of):
    done = subprocess.run([sys.executable, "-c", _IMPORT_AND_REPORT, module], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "torch" not in loaded and "timm" not in loaded, f"importing {module} loaded {sorted(loaded)}"
    assert not loaded & also_free_of, f"importing {module} loaded {sorted(loaded & also_free_of)}"
