"""The web process never imports the ML stack: a fresh interpreter loads the URL config and every view."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "transformers", "peft", "av", "torchvision"]

PROBE = """
import importlib, json, pkgutil, sys

# Record every attempt to import a heavy package, so the check means the same whether or not the ML
# extra is installed in this environment.
attempted = set()
class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            attempted.add(name)
        return None
sys.meta_path.insert(0, Recorder())

import django
django.setup()
from django.urls import get_resolver
resolver = get_resolver()
resolver.url_patterns  # imports config.urls and every included URLconf
import annotations, annotations.admin, annotations.views, annotations.http
for mod in pkgutil.walk_packages(annotations.__path__, "annotations."):
    if mod.name.split(".")[-1] in ("views", "api", "urls", "admin", "forms", "selectors") or ".views" in mod.name:
        importlib.import_module(mod.name)
from django.contrib.admin import site
site.get_urls()
loaded = {m for m in sys.modules if m.split(".")[0] in HEAVY}
print(json.dumps(sorted(attempted | loaded)))
"""


def test_web_process_does_not_import_ml_libraries(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "k" * 50,
           "AFFECTLOOP_DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SECRET_KEY_FILE", None)
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
