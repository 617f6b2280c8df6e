"""The package's import graph: no cycles, and no module imports a layer above its own.

Every ``import`` statement counts, also the ones inside functions (a cycle held together by a
function-level import is still a cycle a reader has to untangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import trimode

ROOT = Path(trimode.__file__).parent
# Lower layers never import higher ones; modules of one layer may import each other (without cycles).
LAYERS = [
    {"files", "config", "tokenizer", "sampling", "masks", "cache", "runinfo"},
    {"model"},
    {"decoding"},
    {"engine"},
    {"cli_common"},
    {"eval", "train"},
    {"bench", "server", "demo", "generate", "infill", "revise", "info"},
    {"cli"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The trimode modules that ``name`` imports (a ``from pkg import sub`` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "trimode"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "trimode":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found |= subs or {target}
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def rank(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_the_package_has_no_import_cycles():
    assert cycles(graph()) == []


def test_no_module_imports_a_higher_layer():
    upward = []
    for name, targets in graph().items():
        for target in targets:
            if rank(name) is not None and rank(target) is not None and rank(target) > rank(name):
                upward.append(f"{name} -> {target}")
    assert sorted(upward) == []


def test_every_top_level_module_has_a_layer():
    tops = {name.split(".")[1] for name in modules() if name != "trimode"}
    assert tops - set(RANK) == set()


def test_the_checker_sees_cycles_and_function_level_imports(tmp_path):
    # A hand-made two-module cycle, one side imported inside a function.
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    pkg = tmp_path / "trimode"
    pkg.mkdir()
    (pkg / "x.py").write_text("def f():\n    from .y import g\n")
    assert imports("trimode.x", pkg / "x.py", {"trimode.x", "trimode.y"}) == {"trimode.y"}


def test_building_the_cli_parser_imports_no_server_packages():
    # Every `trimode` command builds the whole parser; uvicorn and fastapi load only to serve.
    import subprocess
    import sys

    code = ("import sys; from trimode.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('uvicorn', 'fastapi', 'h11') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
