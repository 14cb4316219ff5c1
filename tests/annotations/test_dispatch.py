"""Services start tasks through annotations.dispatch, never by importing annotations.tasks: the import graph
between tasks and services stays a tree, and eager mode still runs dispatched tasks inline in tests."""

import ast
from pathlib import Path

import pytest

from annotations import dispatch, tasks

ROOT = Path(__file__).resolve().parents[2] / "annotations"


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, as absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "services").glob("*.py")) + [ROOT / "dispatch.py"],
                         ids=lambda p: p.name)
def test_services_never_import_tasks(path):
    assert "annotations.tasks" not in imports_of(path)


def test_every_dispatched_name_is_a_task():
    names = [value for key, value in vars(dispatch).items() if key.isupper() and isinstance(value, str)]
    assert names and all(name in {t.name for t in vars(tasks).values() if hasattr(t, "apply_async")}
                         for name in names)


@pytest.mark.django_db(transaction=True)
def test_dispatch_runs_eagerly_in_tests(project, monkeypatch):
    seen = []
    monkeypatch.setattr("annotations.services.maintenance.enqueue_prelabel", lambda pid: seen.append(pid) or 0)
    dispatch.enqueue_prelabel(project.pk)  # outside a transaction: sent at once, run inline (eager)
    assert seen == [project.pk]
