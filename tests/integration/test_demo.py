"""`make demo` (issue 10, item 9): `manage.py demo` builds the whole loop into a fresh data dir, offline.

Runs what `make demo` runs (bootstrap, then demo, in a subprocess with the data dir and model dir in the
environment, as the Makefile sets them), then reads the demo's own SQLite database through `manage.py shell`
(this test's Django database is another one) and checks: the Demo project with ready clips and fused
pre-labels (the chips), a succeeded training run with metrics, two InternVL versions (the base, retired, and
the adapter, active), and that the last line printed is the command that opens the result. A second run on
the same dir reuses the finished demo.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import needs_ffmpeg
from ..embedded import _DROPPED, _DROPPED_PREFIXES

pytest.importorskip("torch", reason="the ml extra (torch) is not installed: the demo trains a model")
pytest.importorskip("peft", reason="the ml extra (peft) is not installed: the demo trains a LoRA adapter")

pytestmark = [pytest.mark.slow, needs_ffmpeg]

REPO = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT = 600  # seconds; about 70 s on 2 CPU cores

CHECK = """
import json
from annotations.models import Clip, ModelVersion, Prediction, Project, TrainingRun
p = Project.objects.get(name="Demo")
run = TrainingRun.objects.filter(project=p).order_by("pk").last()
print(json.dumps({
    "clips": p.clips.count(),
    "ready": p.clips.filter(status=Clip.Status.READY).count(),
    "chips": Prediction.objects.filter(clip__project=p, backend="fused").values("clip_id").distinct().count(),
    "run": run and {"status": run.status, "eval": sorted(run.eval_metrics or {}), "log": bool(run.log),
                    "output": run.output_path},
    "versions": [{"name": v.name, "status": v.status, "adapter": v.adapter_path,
                  "promoted": (v.metrics.get("evaluation") or {}).get("promotion", {}).get("promoted")}
                 for v in ModelVersion.objects.filter(project=p, backend="internvl").order_by("pk")],
}))
"""


def demo_env(data_dir: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}
    env.update(AFFECTLOOP_DATA_DIR=str(data_dir), AFFECTLOOP_MODEL_DIR=str(data_dir / "models"),
               DJANGO_SECRET_KEY_FILE=str(data_dir / "secret_key"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1")
    return env


def manage(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def test_demo_builds_the_whole_loop_into_its_own_data_dir(tmp_path):
    data_dir = tmp_path / "var-demo"
    data_dir.mkdir(mode=0o700)
    (data_dir / "secret_key").write_text(secrets.token_urlsafe(50) + "\n")
    env = demo_env(data_dir)
    boot = manage(env, "bootstrap")
    assert boot.returncode == 0, boot.stdout + boot.stderr

    demo = manage(env, "demo", timeout=DEMO_TIMEOUT)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-6000:]
    lines = demo.stdout.strip().splitlines()
    assert lines[-1] == f"make run AFFECTLOOP_DATA_DIR={data_dir.resolve()}", lines[-5:]
    assert any("auto-promoted" in line for line in lines), demo.stdout  # by the rule, not by hand

    shell = manage(env, "shell", "-c", CHECK)
    assert shell.returncode == 0, shell.stderr
    state = json.loads(shell.stdout.strip().splitlines()[-1])
    assert state["clips"] >= 20 and state["ready"] == state["clips"], state
    assert state["chips"] == state["clips"], state  # every clip carries fused pre-labels
    run = state["run"]
    assert run and run["status"] == "succeeded" and "test" in run["eval"] and run["log"], state
    base, adapter = state["versions"]
    assert not base["adapter"] and base["status"] == "retired", state
    assert adapter["adapter"] == run["output"] and adapter["status"] == "active" and adapter["promoted"], state
    assert (data_dir / "models" / run["output"]).is_dir()

    again = manage(env, "demo", timeout=120)  # re-runnable: the finished demo is reused
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing" in again.stdout and again.stdout.strip().splitlines()[-1] == lines[-1], again.stdout
