"""The web process never imports the ML stack: a fresh interpreter with Django set up imports every module of
the `annotations` and `config` packages (discovered, so a new module is covered too: tasks, services, commands),
loads the URL config and the admin, and must not even have tried to import torch & co."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "transformers", "peft", "av", "torchvision"]
PACKAGES = ["annotations", "config"]

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
imported = []
for package in PACKAGES:
    root = importlib.import_module(package)
    for mod in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(mod.name)
        imported.append(mod.name)
from django.urls import get_resolver
get_resolver().url_patterns  # every included URLconf
from django.contrib.admin import site
site.get_urls()
loaded = {m for m in sys.modules if m.split(".")[0] in HEAVY}
print(json.dumps({"imported": imported, "heavy": sorted(attempted | loaded)}))
"""


def test_web_process_does_not_import_ml_libraries(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "k" * 50,
           "AFFECTLOOP_DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SECRET_KEY_FILE", None)
    code = f"HEAVY = {HEAVY!r}\nPACKAGES = {PACKAGES!r}\n" + PROBE
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # What upload reaches: the task module and the services it calls.
    assert {"annotations.tasks", "annotations.services.ingest", "annotations.services.prelabel",
            "annotations.views", "config.urls"} <= set(report["imported"])
    assert report["heavy"] == []
