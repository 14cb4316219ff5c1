"""Celery tasks: thin wrappers that take ids and call one service each.

Names are explicit and stable (tests/annotations/test_task_names.py pins them): a rename would strand
messages already waiting in a broker. Routing to queues is by name prefix (CELERY_TASK_ROUTES).
"""

from celery import shared_task

from .services import ingest, maintenance, prelabel


@shared_task(name="affectloop.media.process_clip", acks_late=True, max_retries=3, default_retry_delay=30)
def process_clip(clip_id: int) -> str:
    return ingest.process_clip(clip_id)


@shared_task(name="affectloop.media.requeue_stale_clips")
def requeue_stale_clips(older_than_seconds: int = 600) -> int:
    return maintenance.requeue_stale_clips(older_than_seconds)


@shared_task(name="affectloop.gpu.prelabel_clips", acks_late=True)
def prelabel_clips(clip_ids: list[int]) -> dict:
    return prelabel.prelabel_clips(clip_ids)


@shared_task(name="affectloop.prelabel.enqueue")
def enqueue_prelabel(project_id: int | None = None) -> int:
    return maintenance.enqueue_prelabel(project_id)
