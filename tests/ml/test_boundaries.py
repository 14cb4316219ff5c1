"""ml/ is a plain library: no Django anywhere, no heavy import when a module is imported unless it is listed
as heavy, and no heavy library at all in the modules the web side may use.

Modules are discovered, so a new one is covered as soon as it exists (light unless listed in HEAVY_MODULES);
a listed module that does not exist fails: a rename must update the lists, not skip the check.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ML = ROOT / "ml"
ML_STACK = {"torch", "transformers", "peft", "av", "numpy", "torchvision"}
# Importing a light module must not even look for these (openpyxl: ml.metrics loads it inside its loader).
NOT_AT_IMPORT = ML_STACK | {"django", "sentence_transformers", "openpyxl"}
# The only modules that may import the ML stack when imported: they run in workers, tests and benchmarks.
HEAVY_MODULES = {"ml.video", "ml.backends.internvl", "ml.backends.affectgpt", "ml.testing.tiny_internvl",
                 "ml.testing.tiny_affectgpt", "ml.testing.random_internvl",
                 "ml.scoring_bootstrap",  # numpy; the evaluation imports it on the worker, inside a function
                 "ml.agreement"}  # numpy; services.quality imports it inside a function, for big projects
# What the web side may use (README: they import no torch): not even lazily, inside a function.
WEB_SIDE = {"ml.types", "ml.labels", "ml.vocabulary", "ml.metrics", "ml.fusion", "ml.scoring", "ml.prompts",
            "ml.evaluate", "ml.versions", "ml.active"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ML.rglob("*.py"))}
LIGHT = sorted(set(MODULES) - HEAVY_MODULES)


def imported_roots(path: Path) -> set[str]:
    """Top-level packages a file imports absolutely, anywhere in it (lazy imports inside functions too)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_listed_modules_exist():
    assert sorted((HEAVY_MODULES | WEB_SIDE) - set(MODULES)) == []


def test_nothing_in_ml_imports_django():
    assert [name for name, path in MODULES.items() if "django" in imported_roots(path)] == []


def test_web_side_modules_never_import_the_ml_stack():
    offenders = {name: sorted(imported_roots(MODULES[name]) & ML_STACK) for name in WEB_SIDE}
    assert {name: libs for name, libs in offenders.items() if libs} == {}


def test_importing_any_light_module_attempts_no_heavy_import():
    """Every discovered module but HEAVY_MODULES, imported in a fresh interpreter that records each attempt to
    find a heavy package, installed or not (relative imports included, which the source check cannot see)."""
    probe = (
        "import importlib, json, sys\n"
        f"HEAVY = {sorted(NOT_AT_IMPORT)!r}\n"
        "attempted = set()\n"
        "class Recorder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in HEAVY:\n"
        "            attempted.add(name)\n"
        "sys.meta_path.insert(0, Recorder())\n"
        f"for name in {LIGHT!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = {m for m in sys.modules if m.split('.')[0] in HEAVY}\n"
        "print(json.dumps(sorted(attempted | loaded)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_ml_init_stays_empty():
    assert (ML / "__init__.py").read_text().strip() == ""
