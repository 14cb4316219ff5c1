from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from ..models import Clip


def requeue_stale_clips(older_than_seconds: int = 600) -> int:
    """Re-dispatch clips stuck before `ready` (a lost message, a worker killed on the embedded broker).

    process_clip is idempotent, so a clip that is in fact still being processed is harmless to re-send.
    """
    from ..tasks import process_clip

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(Clip.objects.filter(status__in=[Clip.Status.PENDING, Clip.Status.PROCESSING],
                                   updated_at__lt=cutoff).values_list("id", flat=True)[:1000])
    for clip_id in ids:
        transaction.on_commit(lambda clip_id=clip_id: process_clip.delay(clip_id))
    return len(ids)
