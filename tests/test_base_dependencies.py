"""The web image, the media worker and beat install only `[project].dependencies` (platform/Dockerfile.web), so
every third-party package their code can import must come with those: declared there, or required by one that
is. The check reads the imports of `annotations`, `config` and every `ml` module they reach (lazy imports inside
functions too), skipping only the modules that run where the `ml` extra is installed, and the few files
listed below with the extra they need and why.

It would have caught numpy (the dashboard task on the media worker) when pyarrow stopped requiring it, and
openpyxl (the emotion wheels, read on the web by gold scoring and suggestions when a wheel folder is set)."""

import ast
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"annotations", "config", "ml", "migrations", "tests", "bench"}
# ml modules that run only on GPU workers, in tests or in benchmarks (the image with the `ml` extra). The web
# side takes only ResumeError from ml.training.checkpoints; its torch imports sit inside the trainer's functions.
ML_EXTRA_MODULES = ("ml.video", "ml.backends", "ml.train", "ml.training.loop", "ml.training.data",
                    "ml.training.checkpoints", "ml.testing", "ml.runtime", "ml.prelabel")


def worker_only(name: str) -> bool:
    """One of ML_EXTRA_MODULES or inside one (ml.train is not ml.training.config)."""
    return any(name == m or name.startswith(m + ".") for m in ML_EXTRA_MODULES)
# Files of the web packages allowed an import outside the base dependencies: path -> (packages, why).
ALLOWED = {
    "annotations/management/commands/demo.py": ({"torch", "peft"}, "the demo builds a tiny model: `ml` extra"),
    "annotations/services/labelstudio.py": ({"label_studio_sdk", "httpx"},
                                            "the `labelstudio` extra, imported late with a clear error"),
}


def base_distributions() -> set[str]:
    """The base dependencies and, recursively, what they require (without extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(text) for text in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(req.name) or []
        except PackageNotFoundError:
            continue  # not installed here: the import check below reports what is missing
        for text in needs:
            sub = Requirement(text)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports, and the relative ones resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names.add(module)
                names |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import x`
            elif node.module:
                names.add(node.module)
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def web_files() -> list[Path]:
    """annotations/ and config/, and the ml modules they reach, following ml's own imports."""
    files = [p for pkg in ("annotations", "config") for p in sorted((ROOT / pkg).rglob("*.py"))]
    seen = set(files)
    queue = list(files)
    while queue:
        for name in imports_of(queue.pop()):
            if not name.startswith("ml.") or worker_only(name):
                continue
            path = module_file(name)
            if path is not None and path not in seen:
                seen.add(path)
                queue.append(path)
                files.append(path)
    return files


def test_the_web_image_has_every_package_its_code_imports():
    base = base_distributions()
    providers = packages_distributions()
    missing = {}
    for path in web_files():
        rel = str(path.relative_to(ROOT))
        allowed = ALLOWED.get(rel, (set(), ""))[0]
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in FIRST_PARTY or top in sys.stdlib_module_names or top in allowed or top == "__future__":
                continue
            dists = {canonicalize_name(d) for d in providers.get(top, [])}
            if not dists & base:
                missing.setdefault(rel, set()).add(f"{top} ({', '.join(sorted(dists)) or 'not installed'})")
    assert {k: sorted(v) for k, v in missing.items()} == {}, (
        "imported by code the web image runs, but not among the base dependencies (pyproject.toml) or what "
        "they require")


def test_the_walk_reaches_the_media_workers_ml_modules():
    """The modules the dashboard and gold scoring use on the media worker and the web are checked, and the
    GPU-only ones are not: the walk follows what it should."""
    files = {str(p.relative_to(ROOT)) for p in web_files()}
    assert {"ml/metrics.py", "ml/agreement.py", "ml/scoring_bootstrap.py", "ml/vocabulary.py",
            "annotations/services/dashboard.py", "annotations/tasks.py"} <= files
    assert not {"ml/video.py", "ml/backends/internvl.py"} & files
    assert set(ALLOWED) <= files  # a renamed file must update the lists, not silently drop out of them
    assert [name for name in ML_EXTRA_MODULES if module_file(name) is None] == []
