"""The house rule of ``sweep/``: a stage's package imports only from the stages below it, and no
modules import each other, directly or around a loop. Every import counts, a deferred one inside
a function and one under ``TYPE_CHECKING`` included: an arrow is an arrow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A unit imports from the units of lower layers and from itself; the top-level
# modules of the orchestration layer may import each other (cli -> config, parallel -> runner)
# as long as no cycle forms. ``sweep/__init__.py`` is the public face (``sweep.load``) and imports
# lazily, so it is left out.
LAYERS = [
    ("sweep.common", "sweep.schema", "sweep.measure"),
    ("sweep.data",),
    ("sweep.models",),
    ("sweep.ship", "sweep.search"),
    ("sweep.trial", "sweep.report"),
    (
        "sweep.naming",
        "sweep.config",
        "sweep.cli",
        "sweep.runner",
        "sweep.parallel",
        "sweep.predict",
    ),
    ("sweep.benchmarks",),
]
ORCHESTRATION = LAYERS[-2]


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package as its ``__init__``)."""
    out = {}
    for path in (root / "sweep").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # ``from a import b``: the module a.b where there is one, else a itself
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def unit_of(module: str) -> tuple[int, str]:
    """(layer, unit) of a module: the longest unit name that is the module or a package of it."""
    best = None
    for layer, units in enumerate(LAYERS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (
                best is None or len(unit) > len(best[1])
            ):
                best = (layer, unit)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Each import that goes up a layer or sideways to another unit of the same layer."""
    bad = []
    for source, targets in graph.items():
        if source == "sweep":
            continue
        for target in targets:
            (ls, us), (lt, ut) = unit_of(source), unit_of(target)
            allowed = us == ut or lt < ls or (us in ORCHESTRATION and ut in ORCHESTRATION)
            if not allowed:
                bad.append(f"{source} -> {target}")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def package_arrows(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The distinct (unit, unit) pairs with at least one import between them."""
    return {
        (unit_of(s)[1], unit_of(t)[1])
        for s, ts in graph.items()
        if s != "sweep"
        for t in ts
        if unit_of(s)[1] != unit_of(t)[1]
    }


def test_every_module_belongs_to_a_layer():
    for module in module_names():
        if module != "sweep":
            unit_of(module)


def test_imports_run_downward_only():
    assert upward_arrows(import_graph()) == []


def test_no_modules_import_each_other():
    assert cycles(import_graph()) == []


def test_importing_the_package_changes_nothing_outside_it():
    """Every module imported (the peer benchmark's fastText aside: its own environment) leaves
    OmegaConf's resolvers and torch's functions as they were: registering the configs'
    resolvers is the entry points' job (``sweep.naming``)."""
    modules = sorted(m for m in module_names() if not m.endswith(("__main__", "fasttext_peer")))
    probe = f"""
import importlib, torch
from omegaconf import OmegaConf
sdpa = torch.nn.functional.scaled_dot_product_attention
for name in {modules!r}:
    importlib.import_module(name)
assert not OmegaConf.has_resolver("setup_digest") and not OmegaConf.has_resolver("pid")
assert torch.nn.functional.scaled_dot_product_attention is sdpa
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_rules_catch_what_they_forbid():
    """The checks themselves: an upward arrow, a sideways arrow and a loop of three are found."""
    graph = {
        "sweep.data.vocab": {"sweep.models.fit"},  # data -> models: up
        "sweep.models.fit": {"sweep.data.vocab"},
        "sweep.search.loop": {"sweep.ship.export"},  # same layer, another unit
        "sweep.ship.export": {"sweep.ship.quantize"},
        "sweep.ship.quantize": {"sweep.ship.tensorfile"},
        "sweep.ship.tensorfile": {"sweep.ship.export"},
        "sweep.runner": {"sweep.config"},  # orchestration: allowed
        "sweep.config": {"sweep.search.space"},
    }
    assert upward_arrows(graph) == [
        "sweep.data.vocab -> sweep.models.fit",
        "sweep.search.loop -> sweep.ship.export",
    ]
    assert cycles(graph) == [
        ["sweep.data.vocab", "sweep.models.fit"],
        ["sweep.ship.export", "sweep.ship.quantize", "sweep.ship.tensorfile"],
    ]
