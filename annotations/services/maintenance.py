import logging
from datetime import timedelta

from django.utils import timezone

from .. import dispatch
from ..models import Clip, Project
from ..project_config import ConfigError
from . import prelabel


def requeue_stale_clips(older_than_seconds: int = 600) -> int:
    """Re-dispatch clips stuck before `ready` (a lost message, a worker killed on the embedded broker).

    process_clip is idempotent, so a clip that is in fact still being processed is harmless to re-send.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(Clip.objects.filter(status__in=[Clip.Status.PENDING, Clip.Status.PROCESSING],
                                   updated_at__lt=cutoff).values_list("id", flat=True)[:1000])
    for clip_id in ids:
        dispatch.process_clip(clip_id)
    return len(ids)


def enqueue_prelabel(project_id: int | None = None) -> int:
    """Queue pre-labeling for one project, or every active project (the beat job that catches misses)."""
    projects = Project.objects.filter(archived=False)
    if project_id is not None:
        projects = projects.filter(pk=project_id)
    total = 0
    for project in projects:
        try:
            total += prelabel.enqueue_prelabel(project)
        except ConfigError as exc:
            logging.getLogger(__name__).error("project %s: pre-label config: %s", project.slug, exc)
    return total
