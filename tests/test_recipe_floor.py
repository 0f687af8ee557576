"""The recipe package sits below the tasks (issue 25, point 5): ``hrnet_core.recipes`` never imports
``hrnet_core.tasks``, lazily or not, and the low-floor modules import nothing above them.

Before: ``hrnet_core.recipes.config`` imported ``hrnet_core.tasks`` inside ``_task`` and ``_read_profile`` (2 edges
recipes -> tasks, a circle with the task modules importing the recipe schema); after: 0 edges, the loader reads a
task's sections through ``hrnet_core.task_registry``. The imports are read from the source with ``ast`` (every
import statement anywhere in a module, ``if TYPE_CHECKING:`` blocks included: a stricter reading than needed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: modules that may import nothing of the project but each other (module -> allowed project imports)
LOW_FLOOR = {"hrnet_core.vocabulary": set(), "hrnet_core.task_registry": {"hrnet_core.vocabulary"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Absolute dotted names of every module ``path`` imports anywhere (functions included); a relative import is
    resolved against the module's package, ``from a import b`` counts as ``a`` and ``a.b``."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_reader_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: a function-level ``from hrnet_core.tasks import get_task`` and a relative import are
    both seen (a reader that missed them would let the old circle pass)."""
    pkg = tmp_path / "hrnet_core" / "recipes"
    pkg.mkdir(parents=True)
    f = pkg / "config.py"
    f.write_text("def f():\n    from hrnet_core.tasks import get_task\n\nfrom . import params\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = imported_names(f)
    assert "hrnet_core.tasks" in found and "hrnet_core.recipes.params" in found


@pytest.mark.parametrize("path", sorted((ROOT / "hrnet_core" / "recipes").rglob("*.py")), ids=lambda p: p.name)
def test_recipes_never_import_tasks(path):
    bad = sorted(n for n in imported_names(path) if _under(n, "hrnet_core.tasks"))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: read tasks through hrnet_core.task_registry"


@pytest.mark.parametrize("module", sorted(LOW_FLOOR))
def test_low_floor_modules_import_nothing_above(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    project = {n for n in imported_names(path) if _under(n, "hrnet_core") or n.split(".")[0] in
               ("pipelines", "sweeps", "hrnet_cli")}
    above = sorted(n for n in project if not any(_under(n, ok) for ok in LOW_FLOOR[module]))
    assert not above, f"{module} imports {above}"


def test_the_registry_and_the_tasks_agree():
    """Same behaviour through either door: the registry's landed tasks are ``hrnet_core.tasks``'s, unknown and
    unlanded names give the same message (UnknownTaskError there, LookupError here)."""
    from hrnet_core import task_registry
    from hrnet_core.tasks import UnknownTaskError, get_task, landed_tasks

    assert task_registry.landed_tasks() == landed_tasks()
    for name in landed_tasks():
        assert task_registry.load_task(name) is get_task(name)
    for name in ("instance_segmentation", "nope", "json:dumps", "no_such_module_x:TASK"):
        with pytest.raises(LookupError) as low:
            task_registry.load_task(name)
        with pytest.raises(UnknownTaskError) as high:
            get_task(name)
        assert str(low.value) == str(high.value) and str(low.value).startswith(("unknown task", "task "))


def test_one_dict_line_lands_the_toy_task(monkeypatch):
    """docs/TASKS.md's 8th task: the toy task (one file, tests/toy_task.py) lands with one line in
    ``TASK_MODULES``: ``get_task``, ``landed_tasks``, ``tasks_for_dataset`` and the recipe loader (through the
    registry) all see it; before the line the name is only reserved (``"planned, not landed yet"``)."""
    from hrnet_core import task_registry
    from hrnet_core.recipes import load_recipe
    from hrnet_core.tasks import UnknownTaskError, get_task, landed_tasks, tasks_for_dataset
    from tests.toy_task import TASK as TOY

    name = "instance_segmentation"  # a reserved name of the vocabulary that has not landed
    with pytest.raises(UnknownTaskError, match="planned, not landed yet"):
        get_task(name)
    monkeypatch.setitem(task_registry.TASK_MODULES, name, "tests.toy_task:TASK")  # the one line
    assert get_task(name) is TOY and name in landed_tasks() and tasks_for_dataset("toy_seg") == [TOY]
    recipe = load_recipe(str(ROOT / "tests" / "toy_seg.yaml"), {"task": name})
    assert recipe.task == name and type(recipe.test).__name__ == "ToyTest"
