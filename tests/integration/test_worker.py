"""A real Celery worker (not eager mode) takes clips off the broker this test run is configured with:
memory:// by default, Redis when CI sets CELERY_BROKER_URL. The database is the test database (SQLite file
or PostgreSQL), shared with the worker thread."""

import time

import pytest
from celery.contrib.testing.worker import start_worker

from annotations.models import Clip
from annotations.services import ingest
from config.celery import app

from ..conftest import needs_ffmpeg

pytestmark = [pytest.mark.django_db(transaction=True), needs_ffmpeg]


@pytest.fixture
def real_worker():
    app.conf.task_always_eager = False
    try:
        # Consume only the queues the tasks under test route to; beat is not needed here.
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["media", "default"],
                          shutdown_timeout=30) as worker:
            yield worker
    finally:
        app.conf.task_always_eager = True


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.usefixtures("real_worker")
def test_imported_clips_are_processed_by_a_real_worker(project, clip_folder):
    outcomes = list(ingest.import_candidates(project, ingest.folder_candidates(clip_folder), source="import:folder"))
    assert [o.status for o in outcomes] == ["imported"] * 4
    assert wait_until(lambda: Clip.objects.filter(status="ready").count() == 4), \
        list(Clip.objects.values_list("status", "error"))
    for clip in Clip.objects.all():
        assert clip.thumbnail and clip.duration and clip.ready_at
