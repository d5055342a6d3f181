"""The package's rooms: no import cycles (counting imports inside functions too), and no room
importing one above it (data flows config → data → model → train → record → report → cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import bench

ROOT = Path(bench.__file__).resolve().parent

# Rooms from the bottom up; a module may import modules of its own rank or below.
RANKS = [
    ("bench.errors", "bench.registry", "bench.sparse", "bench.ranking"),
    ("bench.config", "bench.losses", "bench.metrics", "bench.measure", "bench.kernels"),
    ("bench.methods", "bench.record", "bench.data", "bench.classifiers"),
    ("bench.dst", "bench.models"),
    ("bench.distributed", "bench.checkpoint", "bench.evaluation", "bench.resolve"),
    ("bench.train",),
    ("bench.tracking", "bench.experiment"),
    ("bench.sweep", "bench.executors", "bench.report", "bench.figures", "bench.bench_kernels",
     "bench.step_memory"),
    ("bench.cli", "bench"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("bench", *path.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _rank(module: str) -> int:
    best = None
    for rank, rooms in enumerate(RANKS):
        for room in rooms:
            if module == room or module.startswith(room + "."):
                if best is None or len(room) > best[1]:
                    best = (rank, len(room))
    assert best is not None, f"{module} belongs to no room of RANKS: add it"
    return best[0]


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every bench module each module imports, at the top or inside functions."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from bench import losses` imports bench.losses; `from bench.x import f`, bench.x
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names]
            for name in names:
                target = known(name) if name.startswith("bench") else None
                # a package importing its own submodules (registration) is not a dependency upwards
                if target and target != module and not target.startswith(module + "."):
                    found.add(target)
        graph[module] = found
    return graph


def test_no_room_imports_one_above_it():
    modules = _modules()
    upward = sorted(f"{m} (rank {_rank(m)}) imports {t} (rank {_rank(t)})"
                    for m, targets in _imports(modules).items() for t in targets if _rank(t) > _rank(m))
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = _imports(_modules())
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, cycles
