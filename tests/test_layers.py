"""The layering rule: packages import only downward, and nothing imports in a circle.

    config, errors, console, files, plots -> data -> models -> training -> inference, deploy -> compare,
    tune, sklearn -> cli

Every import statement counts, function-level ones too: a lazy import that goes upward is still a
dependency the wrong way. A new package must be given its layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "daxiao"
LAYERS = {
    "errors": 0, "console": 0, "files": 0, "plots": 0, "config": 0, "interrupt": 0, "allocator": 0,
    "data": 1,
    "models": 2,
    "training": 3,
    "inference": 4, "deploy": 4,
    "compare": 5, "tune": 5, "sklearn": 5,
    "cli": 6, "__main__": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every daxiao module `path` imports, resolved to the deepest module that exists."""
    mods = {module_name(p) for p in SRC.rglob("*.py")}
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t.startswith("daxiao") and t != name:
                found.add(t)
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None  # `daxiao` itself: the lazy public surface


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def test_every_package_has_a_layer():
    unknown = sorted({m.split(".")[1] for m in graph() if m != "daxiao" and layer(m) is None})
    assert not unknown, f"give these a layer in tests/test_layers.py: {unknown}"


def test_imports_only_go_down():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
              for m, targets in graph().items() if layer(m) is not None
              for t in targets if layer(t) is None or layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    cycles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(g.get(m, ())):
            if state.get(t) == "open":
                cycles.append(" -> ".join(path[path.index(t):] + [t]) if t in path else f"{m} -> {t}")
            elif t not in state:
                visit(t, [*path, t])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_public_surface_imports_nothing_at_import_time():
    tree = ast.parse((SRC / "__init__.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" or
               isinstance(n, ast.Import) and n.names[0].name == "importlib" for n in top)
