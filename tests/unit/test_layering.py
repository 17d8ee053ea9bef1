"""Import layering: no import cycle inside `ttp_ray` (module-level or deferred), and the pure cores never reach
for the orchestration layer (issue "Architecture"). Read from the source with `ast`, so it needs no imports."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "ttp_ray"
CORE = ("ttp_ray.scoring", "ttp_ray.reward", "ttp_ray.evaluation", "ttp_ray.data")
ORCHESTRATION = ("ttp_ray.pipeline", "ttp_ray.pipeline_config", "ttp_ray.cli", "ttp_ray.entrypoint")


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _targets(mod: str, path: Path, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    base = node.module or ""
    if node.level:
        pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
    # `from pkg import submodule` depends on the submodule, not on what pkg/__init__ re-exports
    return subs if len(subs) == len(node.names) else [t for t in (base, *subs) if t in mods]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):  # deferred imports inside functions count too
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[mod].update(t for t in _targets(mod, path, node, mods) if t != mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_inside_ttp_ray() -> None:
    assert _cycles(_graph()) == []


def test_cores_never_import_the_orchestration_layer() -> None:
    bad = sorted((m, t) for m, ts in _graph().items() if m.startswith(CORE) for t in ts if t.startswith(ORCHESTRATION))
    assert bad == []


# Pure cores inside packages that also hold Ray wiring: they, and everything they import inside ttp_ray, never
# import `ray` (not even inside a function), so they run and test in-process.
PURE = (
    "ttp_ray.evaluation.pools_io", "ttp_ray.evaluation.stats", "ttp_ray.evaluation.training_free",
    "ttp_ray.evaluation.calibration", "ttp_ray.evaluation.render", "ttp_ray.evaluation.jsonable",
    "ttp_ray.evaluation.report",
    "ttp_ray.training.global_fit", "ttp_ray.training.global_worker", "ttp_ray.training.user_fit",
    "ttp_ray.training.synthetic_bank",
)


def _imports_ray(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == "ray" or n.startswith("ray.") for n in names):
            return True
    return False


def test_pure_cores_never_import_ray() -> None:
    mods, graph = _modules(), _graph()
    bad = []
    for root in PURE:
        assert root in mods, f"{root} is listed as pure but does not exist"
        seen, todo = set(), [root]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            todo.extend(graph[m])
        bad += sorted((root, m) for m in seen if _imports_ray(mods[m]))
    assert bad == []


def test_ray_finder_sees_a_deferred_import(tmp_path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import ray.train\n")
    assert _imports_ray(f)
    f.write_text("from .ray_utils import x\nimport rayon\n")
    assert not _imports_ray(f)
