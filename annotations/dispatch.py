"""Every task a service starts, by its stable name, sent after the surrounding transaction commits.

Services import this module, never `annotations.tasks` (which imports the services): that keeps the import
graph a tree (tests/annotations/test_dispatch.py). The task is looked up in the app's registry and sent
with `apply_async`, so CELERY_TASK_ALWAYS_EAGER still runs it inline in tests; `send_task` by name would
bypass eager mode and leak messages into a real queue.
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction

PROCESS_CLIP = "affectloop.media.process_clip"
PRELABEL_CLIPS = "affectloop.gpu.prelabel_clips"
CAPTION_CLIPS = "affectloop.gpu.caption_clips"
ENQUEUE_CAPTIONS = "affectloop.captions.enqueue"
REGISTER_CONFIGURED_MODELS = "affectloop.gpu.register_configured_models"
ENQUEUE_PRELABEL = "affectloop.prelabel.enqueue"
REINDEX_PROJECT = "affectloop.index.reindex_project"
RESPLIT = "affectloop.index.resplit"
TRAIN_RUN = "affectloop.train.run"
TRAIN_WATCH = "affectloop.train.watch"


def _send(name: str, args: tuple, **options) -> None:
    task = current_app.tasks[name]
    transaction.on_commit(lambda: task.apply_async(args, **options))


def process_clip(clip_id: int) -> None:
    _send(PROCESS_CLIP, (clip_id,))


def prelabel_clips(clip_ids: list[int]) -> None:
    _send(PRELABEL_CLIPS, (clip_ids,))


def caption_clips(clip_ids: list[int]) -> None:
    _send(CAPTION_CLIPS, (clip_ids,))


def enqueue_captions(project_id: int) -> None:
    _send(ENQUEUE_CAPTIONS, (project_id,))


def register_configured_models(project_id: int, backends: list[str] | None = None) -> None:
    _send(REGISTER_CONFIGURED_MODELS, (project_id, backends))


def enqueue_prelabel(project_id: int, *, countdown: float | None = None) -> None:
    _send(ENQUEUE_PRELABEL, (project_id,), **({"countdown": countdown} if countdown else {}))


def reindex_project(project_id: int, terms: list[str] | None = None, *, after: int = 0) -> None:
    """Rebuild the clip index after a vocabulary change: every clip, or only those carrying one of `terms`;
    `after`, the clip id a previous slice of the same rebuild stopped at."""
    _send(REINDEX_PROJECT, (project_id, terms, after))


def resplit(project_id: int) -> None:
    _send(RESPLIT, (project_id,))


def train_run(run_id: int) -> None:
    _send(TRAIN_RUN, (run_id,))


BUILD_EXPORT = "affectloop.media.build_export"


def build_export(export_id: int) -> None:
    _send(BUILD_EXPORT, (export_id,))


ERASE_CLIPS = "affectloop.media.erase_clips"


def erase_clips(project_id: int, where: list[str], actor_id: int | None) -> None:
    """A large erasure by metadata value (services.erasure.erase_later), off the web request."""
    _send(ERASE_CLIPS, (project_id, where, actor_id))


SCRUB_TRAINING_DATA = "affectloop.train.scrub_erased"


def scrub_training_data(project_id: int, file_names: list[str]) -> None:
    """Erased clips out of the training JSONL, on a training worker (it mounts the model directory)."""
    _send(SCRUB_TRAINING_DATA, (project_id, file_names))


LABELSTUDIO_SYNC = "affectloop.media.labelstudio_sync"


def labelstudio_sync(project_id: int, step: str, actor_id: int | None) -> None:
    """A large project's Label Studio push or pull (services.labelstudio.sync_later), off the web request."""
    _send(LABELSTUDIO_SYNC, (project_id, step, actor_id))


REFRESH_DASHBOARD = "affectloop.reports.dashboard_project"


def refresh_dashboard(project_id: int) -> None:
    """One project's dashboard figures recomputed now (the page's Refresh button; a big project's first)."""
    _send(REFRESH_DASHBOARD, (project_id,))
