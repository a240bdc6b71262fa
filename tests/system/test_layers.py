"""The package layout keeps its layers: no import cycles, no import against the declared layers.

LAYERS is the picture in ARCHITECTURE.md ("Layers"), lowest first. A package may import its own
modules and packages on lower layers; packages that share a layer are independent of each other.
Every import counts: module level and inside functions (optkit imports heavy things lazily, and a
lazy import that runs up the layers is still an upward dependency); only ``if TYPE_CHECKING:``
blocks are left out, as they never run.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "optkit"

LAYERS: list[tuple[str, ...]] = [
    ("common",),
    ("data",),
    ("zoo",),
    ("model",),
    ("runtime",),
    ("verification",),
    ("quantization",),
    ("passes",),
    ("release",),
    ("pipeline", "serve", "lesson"),
    ("cli",),
]
# optkit/__init__.py (the version) sits with common; `python -m optkit` is the CLI; demo/ is data.
TOP_LEVEL = {"optkit": "common", "optkit.__main__": "cli"}


def module_files() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def imports_of(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The optkit modules `name` imports (resolved to the longest existing module name)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(x) for b in node.body for x in ast.walk(b))
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - (node.level - 1)] + [node.module or ""]) if node.level \
                else (node.module or "")
            base = base.strip(".")
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            targets = [node.args[0].value]
        for t in targets:
            if t.split(".")[0] != "optkit":
                continue
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = module_files()
    return {m: imports_of(m, f, mods) for m, f in mods.items()}


def package_of(module: str) -> str:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    return module.split(".")[1]


def layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise KeyError(package)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        work = [(v, iter(sorted(g[v])))]
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(g.items()):
        ps = package_of(src)
        for dst in sorted(targets):
            pd = package_of(dst)
            if ps == pd:
                continue
            ls, ld = layer_of(ps), layer_of(pd)
            if ld > ls:
                bad.append(f"{src} imports {dst}: {ps} is below {pd}")
            elif ld == ls:
                bad.append(f"{src} imports {dst}: {ps} and {pd} are independent packages on one layer")
    return bad


def test_every_package_has_a_layer():
    packages = {package_of(m) for m in module_files()} - {"demo"}
    placed = {p for layer in LAYERS for p in layer}
    assert packages <= placed, f"packages without a layer: {sorted(packages - placed)}"
    assert not (placed - packages), f"layers name packages that do not exist: {sorted(placed - packages)}"


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_import_runs_against_the_layers():
    assert violations(graph()) == []


def test_architecture_md_draws_the_same_layers():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    drawn = [tuple(re.findall(r"`(\w+)/`", line)) for line in section.splitlines()
             if re.match(r"^\s*\d+\.", line)]
    assert list(reversed(drawn)) == LAYERS or drawn == LAYERS


def test_every_package_init_says_what_it_may_import():
    for init in sorted(PKG.glob("*/__init__.py")):
        if init.parent.name == "demo":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import:" in doc, f"{init.relative_to(ROOT)} does not say what it may import"


# The checks themselves must be able to fail: a small graph with a cycle and an upward import.
def test_the_checks_catch_a_cycle_and_an_upward_import():
    g = {"optkit.common.a": {"optkit.model.b"}, "optkit.model.b": {"optkit.common.a"},
         "optkit.serve.x": {"optkit.lesson.y"}, "optkit.lesson.y": set()}
    assert cycles(g) == [["optkit.common.a", "optkit.model.b"]]
    found = violations(g)
    assert any("common is below model" in v for v in found)
    assert any("independent packages" in v for v in found)


@pytest.mark.parametrize("module", ["optkit.passes.quantize_int8", "optkit.passes.export"])
def test_no_pass_reaches_ray_or_the_pipeline(module):
    g = graph()
    assert not [t for t in g[module] if package_of(t) in {"pipeline", "release", "serve"}]
