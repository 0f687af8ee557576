"""No import circles (issue 25, point 5): no module of ``hrnet_core``, ``pipelines``, ``sweeps`` or ``hrnet_cli``
imports one that imports it back, directly or through others, lazily (inside a function) or not.

The graph is read from the source (``ast``), so a lazy import counts as much as a top-level one: an edge
``a -> b`` for every ``import b`` / ``from b import x`` anywhere in ``a`` (``from pkg import mod`` is an edge to
``pkg.mod`` when that is a module, else to ``pkg``); ``if TYPE_CHECKING:`` blocks are skipped (never executed). A
package's ``__init__`` is its own node, and importing ``a.b.c`` is also an edge to the packages ``a`` and ``a.b``
(Python runs them first) unless the importing module lives in them.

Measured on the tree before issue 25 (11549e9): two circles, ``pipelines.report`` (``__init__``, ``cli``, ``runs``)
<-> ``pipelines.tracking`` (its lazy import of ``pipelines.report.compare`` runs the package ``__init__``, which
imports the MLflow module back), and ``hrnet_cli.main`` -> ``hrnet_cli.predict`` / ``export`` -> ``pipelines.predict``
-> ``hrnet_cli.export_backbone`` (``resolve_weights``) -> ``hrnet_cli`` -> ``hrnet_cli.main``; after: none. Now
``pipelines.mlflow_runs`` -> ``pipelines.paper_values`` (the report above both), ``hrnet_cli.output`` holds the
JSON helpers, ``pipelines.runs.resolve_weights`` the weights lookup.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hrnet_core", "pipelines", "sweeps", "hrnet_cli")


def _modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of :data:`PACKAGES` (a package as its ``__init__``)."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.stmt]:
    """Every import statement of ``tree`` except those under ``if TYPE_CHECKING:``."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _targets(name: str, node: ast.stmt, modules: dict[str, Path]) -> set[str]:
    """The project modules an import statement of module ``name`` loads."""
    is_pkg = modules[name].name == "__init__.py"
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    out = set()
    for a in node.names:
        sub = f"{origin}.{a.name}"
        if sub in modules:
            out.add(sub)
        elif origin in modules:
            out.add(origin)
    return out


def _with_packages(name: str, targets: set[str], modules: dict[str, Path]) -> set[str]:
    """``targets`` plus the packages Python runs first to import them (``a.b.c`` runs ``a`` and ``a.b``), except
    the packages ``name`` itself lives in (they are running or done when ``name`` runs)."""
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    out = set(targets)
    for t in targets:
        parts = t.split(".")
        out.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in modules and p not in own)
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules it imports}}`` over :data:`PACKAGES` (self-edges dropped)."""
    modules = _modules()
    graph = {}
    for name, f in modules.items():
        tree = ast.parse(f.read_text(), filename=str(f))
        direct = {t for node in _import_nodes(tree) for t in _targets(name, node, modules)}
        graph[name] = _with_packages(name, direct, modules) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted; sorted by first name."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_cycle_finder_finds_a_cycle():
    """The finder itself: a -> b -> c -> a is one circle, d -> a is none."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports():
    """A function-level import is an edge: ``pipelines.train_worker`` imports ``hrnet_core.tasks`` inside
    ``_setup``; ``pipelines.mlflow_runs`` imports ``pipelines.paper_values`` inside ``log_paper_comparison``."""
    g = import_graph()
    assert "hrnet_core.tasks" in g["pipelines.train_worker"]
    assert "pipelines.paper_values" in g["pipelines.mlflow_runs"]


def test_no_import_cycles():
    """The ``hrnet_core.recipes.config`` <-> ``hrnet_core.tasks`` circle went with ``hrnet_core.task_registry``
    (162c979); the report <-> MLflow and CLI <-> pipelines circles with 9dae762."""
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


LOWER_LAYERS = ("hrnet_core.data", "hrnet_core.losses", "hrnet_core.evaluation", "hrnet_core.codecs")
UPPER = ("hrnet_core.tasks", "hrnet_core.recipes", "hrnet_core.task_registry", "pipelines", "sweeps", "hrnet_cli")


def test_lower_layers_know_no_task_or_recipe():
    """The layering of docs/TASKS.md (issue 25): readers, transforms, losses, codecs and metrics take plain values
    (a reader returns tables, the task wraps them in ``PreparedRows``; a loss takes its weights, not the recipe), so
    they never import a task, the recipe schema or the Ray / MLflow layers, lazily or not."""
    graph = import_graph()
    wrong = {m: sorted(t for t in targets if t.startswith(UPPER))
             for m, targets in graph.items() if m.startswith(LOWER_LAYERS)}
    assert {m: t for m, t in wrong.items() if t} == {}
