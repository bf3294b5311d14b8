"""The import graph of the project's packages, read from the source with `ast` (nothing is imported).

Every import counts, including those inside functions: an import moved into a function to dodge a loop still
makes one (issue #27). And `runtime` stays importable without PyTorch: none of its modules, nor anything they
import when loaded, imports torch at load time (the torch counter, `runtime.counting.gpu`, imports it when used).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "trainer", "export", "benchmarks")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package's __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(tree: ast.AST, package: str, in_function: bool = False):
    """(imported name, imported inside a function) for each import below ``tree``; ``from a import b`` gives both
    ``a.b`` and ``a`` (the caller keeps whichever is a module)."""
    for node in ast.iter_child_nodes(tree):
        nested = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.Import):
            yield from (([a.name], in_function) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            yield from (([f"{base}.{a.name}", base], in_function) for a in node.names)
        yield from _imports(node, package, nested)


def _resolve(name: str, modules: dict) -> str | None:
    """The project module ``name`` loads, most specific first: ``runtime.counting.counter.CellCounter`` →
    ``runtime.counting.counter``; None outside the project."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(top_level_only: bool = False) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between project modules, external top-level packages each module imports)."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    external: dict[str, set[str]] = {m: set() for m in modules}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = name if is_package else name.rpartition(".")[0]
        for candidates, in_function in _imports(tree, package):
            if top_level_only and in_function:
                continue
            target = next((t for t in map(lambda c: _resolve(c, modules), candidates) if t), None)
            if target is None:
                external[name].add(candidates[-1].split(".")[0])
            elif target != name:
                edges[name].add(target)
    return edges, external


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import loop as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(edges):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            following = next(stack[-1], None)
            if following is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(following) == 1:
                return path[path.index(following):] + [following]
            elif following not in state:
                state[following] = 1
                path.append(following)
                stack.append(iter(sorted(edges[following])))
    return None


def test_the_graph_is_read():
    edges, external = import_graph()
    assert "runtime.counting.instances" in edges["runtime.counting.counter"]
    assert "trainer.models" in edges["trainer.checkpoint"]
    assert "torch" in external["trainer.checkpoint"]


def test_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_loops():
    edges, _ = import_graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import loop (imports inside functions count): " + " → ".join(cycle)


def test_runtime_loads_without_torch():
    edges, external = import_graph(top_level_only=True)
    loaded = {m for m in edges if m == "runtime" or m.startswith("runtime.")}
    todo = list(loaded)
    while todo:  # everything runtime's modules import when they load
        for target in edges[todo.pop()] - loaded:
            loaded.add(target)
            todo.append(target)
    offenders = sorted(m for m in loaded if "torch" in external[m])
    assert not offenders, f"import torch at load time: {offenders}"
    assert all(m.startswith("runtime") for m in loaded), sorted(m for m in loaded if not m.startswith("runtime"))
