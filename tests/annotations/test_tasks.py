"""Task names are part of the broker protocol: pin them, and the queue each one goes to."""

import pytest
from celery import current_app

from annotations import tasks
from annotations.models import Clip

from ml.testing.samples import make_clip

from ..conftest import needs_ffmpeg

PINNED = {
    "affectloop.media.process_clip": "media",
    "affectloop.media.requeue_stale_clips": "media",
    "affectloop.gpu.prelabel_clips": "gpu",
    "affectloop.gpu.caption_clips": "gpu",  # human-centric captions of unverified clips (training data)
    "affectloop.gpu.register_configured_models": "gpu",  # on a GPU worker: it reads the model files
    "affectloop.prelabel.enqueue": "default",
    "affectloop.captions.enqueue": "default",  # torch-free: picks the clips to caption
    "affectloop.prelabel.rescore": "default",  # torch-free: predictions and the verified pool only
    "affectloop.index.reindex_project": "default",  # after a vocabulary change
    "affectloop.index.resplit": "default",  # after the split ratios or group key changed
    "affectloop.train.run": "train",  # LoRA training run, acknowledged on receipt
    "affectloop.train.watch": "default",  # beat: not queued behind the run it watches
    "affectloop.train.trigger": "default",  # beat: starts due runs (torch-free)
    "affectloop.train.clean_adapters": "train",  # beat: removes long-retired adapters where the files are
    "affectloop.train.scrub_erased": "train",  # erased clips out of the runs' JSONL, where the files are
    "affectloop.media.labelstudio_sync": "media",  # a large project's Label Studio push or pull
    "affectloop.media.build_export": "media",  # writes a dataset export's zip
    "affectloop.media.expire_exports": "media",  # beat: removes expired export downloads
    "affectloop.media.erase_clips": "media",  # a large erasure by metadata value (it deletes media files)
    "affectloop.reports.dashboard": "default",  # beat: every project's dashboard figures (torch-free)
    "affectloop.reports.dashboard_project": "default",  # one project's, from the dashboard's Refresh
}


def test_task_names_are_stable():
    ours = {name for name in current_app.tasks if name.startswith("affectloop.")}
    assert ours == set(PINNED)
    assert tasks.process_clip.name == "affectloop.media.process_clip"


@pytest.mark.parametrize("name,queue", PINNED.items())
def test_tasks_route_to_their_queue(name, queue):
    route = current_app.amqp.router.route({}, name)
    assert route["queue"].name == queue


def test_gpu_and_train_prefixes_have_queues():
    router = current_app.amqp.router
    assert router.route({}, "affectloop.gpu.anything")["queue"].name == "gpu"
    assert router.route({}, "affectloop.train.anything")["queue"].name == "train"
    assert router.route({}, "something.else")["queue"].name == "default"


@needs_ffmpeg
@pytest.mark.django_db(transaction=True)
def test_process_clip_is_idempotent_and_marks_a_broken_file_failed(project, clip_folder):
    from django.core.management import call_command

    call_command("import_clips", str(clip_folder), "--project", project.name, stdout=open("/dev/null", "w"),
                 stderr=open("/dev/null", "w"))
    clip = Clip.objects.first()
    before = (clip.status, clip.ready_at)
    assert tasks.process_clip(clip.pk) == "ready"  # a re-delivered message changes nothing
    clip.refresh_from_db()
    assert (clip.status, clip.ready_at) == before
    assert tasks.process_clip(999999) == "missing"

    other = Clip.objects.last()
    Clip.objects.filter(pk=other.pk).update(status="pending")
    with open(other.file.path, "r+b") as fh:  # the stored copy got damaged on disk
        fh.truncate(200)
    assert tasks.process_clip(other.pk) == "failed"
    other.refresh_from_db()
    assert other.status == "failed" and other.error


@needs_ffmpeg
@pytest.mark.django_db
def test_requeue_stale_clips_redispatches_old_pending_clips(project, tmp_path, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    video = make_clip(tmp_path / "a.mp4")
    from annotations.services import ingest

    with django_capture_on_commit_callbacks(execute=False):  # simulate a lost message: never dispatched
        ingest.store_clip(project, ingest.validate_file(ingest.Candidate(path=video, display="a.mp4")),
                          source="upload")
    clip = Clip.objects.get()
    assert clip.status == "pending"
    Clip.objects.filter(pk=clip.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.requeue_stale_clips(600) == 1
    clip.refresh_from_db()
    assert clip.status == "ready"
