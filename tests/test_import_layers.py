"""The package's layers only look down, and no modules import each other in a cycle.

cli -> front ends (keras, sklearn, bench) -> train -> nn/models/optim/data -> autograd ->
ops/_device -> backends -> _validate/_version/_files (and the compiled _cpu/_cuda). The test parses
every module's imports (module-level and inside functions) with ``ast``, so a lazy import
that points upward fails as well. A new module needs a line in LAYERS.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "deepkern"

# lowest first; a module belongs to the longest prefix listed
LAYERS: List[Tuple[str, ...]] = [
    ("_cpu", "_cuda", "_validate", "_version", "_files", "_interop", "_threads", "_contention", "_precision"),
    ("backends",),
    ("ops", "_device", "device", "_info"),
    ("autograd",),
    ("nn", "optim", "models", "data"),
    ("train", "distributed"),
    ("keras", "sklearn", "_bench", "bench", "torch", "torchvision", "compat", "onnx"),
    ("cli",),
]
FACADE = "deepkern"  # the package's __init__: imports from every layer, imported by none


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> Optional[int]:
    if module == FACADE:
        return len(LAYERS)
    rest = module.split(".")[1:]
    for i, names in enumerate(LAYERS):
        if rest and rest[0] in names:
            return i
    return None


def resolve(module: str, is_package: bool, node: ast.AST) -> List[str]:
    """The deepkern modules an import statement names (submodules where they exist)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == FACADE]
    assert isinstance(node, ast.ImportFrom)
    if node.level == 0:
        base = node.module or ""
        if base.split(".")[0] != FACADE:
            return []
    else:
        parts = module.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if _exists(sub) else base)
    return out


EXTENSIONS = ("deepkern._cpu", "deepkern._cuda")  # compiled: no .py file to find


def _exists(module: str) -> bool:
    if module in EXTENSIONS:
        return True
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def collect() -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]], Dict[str, Path]]:
    """(all imports, module-level imports, files) per module."""
    every: Dict[str, Set[str]] = {}
    toplevel: Dict[str, Set[str]] = {}
    files: Dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        files[name] = path
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        every[name], toplevel[name] = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                every[name].update(resolve(name, is_package, node))
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                toplevel[name].update(resolve(name, is_package, node))
    return every, toplevel, files


def test_every_module_has_a_layer():
    _, _, files = collect()
    missing = sorted(m for m in files if layer_of(m) is None)
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"


def test_no_module_imports_upward():
    every, _, _ = collect()
    upward = []
    for module, targets in every.items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "imports that point upward:\n" + "\n".join(sorted(upward))


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: List[str]) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [])
            if found:
                return found
    return None


def _without_package_inits(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    # A package's __init__ gathers its submodules; a submodule naming the package for a
    # sibling's name is the same dependency as naming the sibling. Edges from a module to a
    # package that contains it are dropped (Python runs the __init__ first, never a cycle).
    out: Dict[str, Set[str]] = {}
    for module, targets in graph.items():
        out[module] = {t for t in targets if not module.startswith(t + ".")}
    return out


def test_no_import_cycles():
    every, _, _ = collect()
    cycle = find_cycle(_without_package_inits(every))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_an_upward_import_and_a_cycle():
    graph = {"deepkern.a": {"deepkern.b"}, "deepkern.b": {"deepkern.c"}, "deepkern.c": {"deepkern.a"}}
    assert find_cycle(graph) == ["deepkern.a", "deepkern.b", "deepkern.c", "deepkern.a"]
    assert layer_of("deepkern.autograd.tensor") < layer_of("deepkern.nn.functional")
    assert layer_of("deepkern.train.loop") > layer_of("deepkern.models")
    assert layer_of("deepkern.cli.train") == len(LAYERS) - 1
    node = ast.parse("from ..nn import functional").body[0]
    assert resolve("deepkern.autograd.tensor", False, node) == ["deepkern.nn.functional"]
