"""Pre-labeling with real workers: the in-process worker on the configured broker, and a worker process
killed with SIGKILL mid-batch on Redis (CI), after which each clip still ends with exactly one prediction
per backend."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection

from annotations.models import Clip, Prediction
from annotations.services import ingest, prelabel
from config.celery import app

from .test_worker import wait_until

pytest.importorskip("torch", reason="the ml extra (torch) is not installed")
if shutil.which("ffmpeg") is None:
    pytest.skip("ffmpeg not installed (apt-get install ffmpeg)", allow_module_level=True)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from ml.testing.tiny import build

    root = tmp_path_factory.mktemp("models")
    ivl, agpt = build("internvl", root / "ivl"), build("affectgpt", root / "agpt")
    return {"internvl": ivl, "affectgpt": agpt, "checkpoint": agpt / "checkpoint.pth"}


def configure(project, models, batch_size=8):
    project.config = {"prelabel": {
        "backends": {"internvl": {"model": str(models["internvl"]), "num_frames": 2},
                     "affectgpt": {"model": str(models["affectgpt"]), "checkpoint": str(models["checkpoint"])}},
        "batch_size": batch_size}}
    project.save()


def complete(n):
    return Prediction.objects.filter(backend="fused").count() == n


def test_in_process_worker_prelabels_new_clips(project, tiny_models, clip_folder):
    configure(project, tiny_models)
    prelabel._BACKENDS.clear()
    app.conf.task_always_eager = False
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["media", "gpu", "default"],
                          shutdown_timeout=60):
            outcomes = list(ingest.import_candidates(project, ingest.folder_candidates(clip_folder),
                                                     source="import:folder"))
            assert [o.status for o in outcomes] == ["imported"] * 4
            assert wait_until(lambda: complete(4), timeout=180), list(Clip.objects.values_list("status",
                                                                                             "prelabel_error"))
    finally:
        app.conf.task_always_eager = True
        prelabel._BACKENDS.clear()
    for clip in Clip.objects.all():
        assert sorted(clip.predictions.values_list("backend", flat=True)) == ["affectgpt", "fused", "internvl"]


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _worker(tmp_path, name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": _database_url(),
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "DJANGO_SECRET_KEY": "w" * 50,
                "AFFECTLOOP_DATA_DIR": str(tmp_path / name), "AFFECTLOOP_MEDIA_ROOT": str(settings.MEDIA_ROOT),
                "AFFECTLOOP_VISIBILITY_TIMEOUT": "5", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.pop("DJANGO_SECRET_KEY_FILE", None)
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "--pool", "solo",
                             "--prefetch-multiplier", "1", "-n", f"{name}@%h", "--loglevel", "INFO"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.skipif(not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"),
                    reason="needs a Redis broker (CI sets CELERY_BROKER_URL=redis://...); the embedded "
                           "filesystem broker loses an in-flight task on SIGKILL by design")
def test_sigkill_mid_batch_leaves_exactly_one_prediction_per_backend(project, tiny_models, clip_folder, tmp_path):
    from annotations.samples import generate_sample_clips

    generate_sample_clips(clip_folder / "more", 4, seconds=1.0, width=160, height=120, seed=11, speech=False)
    outcomes = list(ingest.import_candidates(project, ingest.folder_candidates(clip_folder), source="import:folder"))
    n = sum(o.status == "imported" for o in outcomes)
    assert n == 8 and Clip.objects.filter(status="ready").count() == n
    configure(project, tiny_models, batch_size=8)

    first = _worker(tmp_path, "first")
    app.conf.task_always_eager = False
    try:
        assert prelabel.enqueue_prelabel(project) == n  # one task with all 8 clips, sent to Redis
        # Kill as soon as the batch is half done: InternVL stored, AffectGPT/fusion not yet.
        assert wait_until(lambda: Prediction.objects.filter(backend="internvl").exists(), timeout=180), \
            (tmp_path / "first.log").read_text()[-3000:]
        fused_at_kill = Prediction.objects.filter(backend="fused").count()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        assert fused_at_kill < n, "the batch finished before the kill; the test proves nothing"

        second = _worker(tmp_path, "second")
        try:
            assert wait_until(lambda: complete(n), timeout=240), (tmp_path / "second.log").read_text()[-3000:]
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(60)
    finally:
        app.conf.task_always_eager = True
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    for clip in Clip.objects.all():
        backends = list(clip.predictions.values_list("backend", flat=True))
        assert sorted(backends) == ["affectgpt", "fused", "internvl"], (clip.pk, backends)
