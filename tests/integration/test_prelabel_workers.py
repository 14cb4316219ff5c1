"""Pre-labeling with real workers: the in-process worker on the configured broker, and a worker process
killed with SIGKILL mid-batch on Redis (CI), after which each clip still ends with exactly one prediction
per backend."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection

from annotations.models import Clip, ModelVersion, Prediction
from annotations.services import ingest, prelabel, prelabel_run
from config.celery import app
from ml.testing.samples import generate_sample_clips

from ..conftest import needs_ffmpeg
from .test_worker import wait_until

pytest.importorskip("torch", reason="the ml extra (torch) is not installed")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, needs_ffmpeg]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The model directory (AFFECTLOOP_MODEL_DIR) with a tiny InternVL in ivl/ and AffectGPT in agpt/."""
    from ml.testing.tiny import build

    root = tmp_path_factory.mktemp("models")
    build("internvl", root / "ivl")
    build("affectgpt", root / "agpt")
    return root


@pytest.fixture(autouse=True)
def _models_in_settings(settings, model_dir):
    settings.MODEL_DIR = model_dir  # configs name models relative to it, as in production


def configure(project, batch_size=8):
    project.config = {"prelabel": {
        "backends": {"internvl": {"model": "ivl", "num_frames": 2},
                     "affectgpt": {"model": "agpt", "checkpoint": "agpt/checkpoint.pth"}},
        "batch_size": batch_size}}
    project.save()


def complete(n):
    return Prediction.objects.filter(backend="fused").count() == n


def test_in_process_worker_prelabels_new_clips(project, clip_folder):
    configure(project)
    prelabel_run.model_cache().clear()
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
        prelabel_run.model_cache().clear()
    for clip in Clip.objects.all():
        assert sorted(clip.predictions.values_list("backend", flat=True)) == ["affectgpt", "fused", "internvl"]


def test_enqueueing_needs_no_model_files_and_a_worker_with_them_prelabels(project, clip_folder, model_dir,
                                                                        settings, tmp_path):
    """The web process and beat have an empty model directory: they queue from the database alone."""
    list(ingest.import_candidates(project, ingest.folder_candidates(clip_folder), source="import:folder"))
    assert Clip.objects.filter(status="ready").count() == 4
    settings.MODEL_DIR = tmp_path / "empty"  # as on the web server
    prelabel_run.model_cache().clear()
    app.conf.task_always_eager = False
    try:
        configure(project)
        assert prelabel.enqueue_prelabel(project) == 0  # nothing registered yet: a worker registers first
        assert not ModelVersion.objects.exists() and not Prediction.objects.exists()
        settings.MODEL_DIR = model_dir  # the GPU worker has the files
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["gpu", "default"],
                          shutdown_timeout=60):
            assert wait_until(lambda: complete(4), timeout=180), list(Clip.objects.values_list("prelabel_error"))
    finally:
        app.conf.task_always_eager = True
        prelabel_run.model_cache().clear()
    assert set(ModelVersion.objects.filter(status="active").values_list("backend", flat=True)) == {
        "internvl", "affectgpt"}
    # Back on the web server: what is done is known from the database, with no files.
    settings.MODEL_DIR = tmp_path / "empty"
    assert prelabel.clips_needing_prelabel(project).count() == 0


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _worker(tmp_path, name, model_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": _database_url(),
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "DJANGO_SECRET_KEY": "w" * 50,
                "AFFECTLOOP_DATA_DIR": str(tmp_path / name), "AFFECTLOOP_MEDIA_ROOT": str(settings.MEDIA_ROOT),
                "AFFECTLOOP_MODEL_DIR": str(model_dir),
                "AFFECTLOOP_VISIBILITY_TIMEOUT": "5", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.pop("DJANGO_SECRET_KEY_FILE", None)
    with open(tmp_path / f"{name}.log", "w") as log:  # the worker keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "--pool",
                                 "solo", "--prefetch-multiplier", "1", "-n", f"{name}@%h", "--loglevel", "INFO"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.skipif(not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"),
                    reason="needs a Redis broker (CI sets CELERY_BROKER_URL=redis://...); the embedded "
                           "filesystem broker loses an in-flight task on SIGKILL by design")
def test_sigkill_mid_batch_leaves_exactly_one_prediction_per_backend(project, model_dir, clip_folder, tmp_path,
                                                                      settings):
    generate_sample_clips(clip_folder / "more", 4, seconds=1.0, width=160, height=120, seed=11, speech=False)
    outcomes = list(ingest.import_candidates(project, ingest.folder_candidates(clip_folder), source="import:folder"))
    n = sum(o.status == "imported" for o in outcomes)
    assert n == 8 and Clip.objects.filter(status="ready").count() == n
    settings.MODEL_DIR = tmp_path / "empty"  # this process is the web server: no model files
    configure(project, batch_size=8)

    first = _worker(tmp_path, "first", model_dir)
    app.conf.task_always_eager = False
    try:
        # Nothing is registered yet: the worker registers the models, then queues one task with all 8 clips.
        assert prelabel.enqueue_prelabel(project) == 0
        # Kill as soon as the batch is half done: InternVL stored, AffectGPT/fusion not yet.
        assert wait_until(lambda: Prediction.objects.filter(backend="internvl").exists(), timeout=180), \
            (tmp_path / "first.log").read_text()[-3000:]
        fused_at_kill = Prediction.objects.filter(backend="fused").count()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        assert fused_at_kill < n, "the batch finished before the kill; the test proves nothing"

        second = _worker(tmp_path, "second", model_dir)
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
