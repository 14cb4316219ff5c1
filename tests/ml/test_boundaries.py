"""ml/ is a plain library: no Django anywhere, and no torch in the modules the web side may use."""

import ast
from pathlib import Path

ML = Path(__file__).resolve().parents[2] / "ml"
TORCH_FREE = ["types", "labels", "vocabulary", "metrics", "fusion", "scoring", "prompts", "evaluate", "versions",
              "active"]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_nothing_in_ml_imports_django():
    offenders = [str(p.relative_to(ML)) for p in ML.rglob("*.py") if "django" in imported_roots(p)]
    assert offenders == []


def test_light_modules_never_import_heavy_libraries():
    heavy = {"torch", "transformers", "peft", "av", "numpy", "torchvision"}
    for name in TORCH_FREE:
        path = ML / f"{name}.py"
        if path.exists():
            assert imported_roots(path) & heavy == set(), name


def test_ml_init_stays_empty():
    assert (ML / "__init__.py").read_text().strip() == ""
