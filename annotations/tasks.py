"""Celery tasks: thin wrappers that take ids and call one service each.

Names are explicit and stable (tests/annotations/test_tasks.py pins them): a rename would strand messages
already waiting in a broker. Routing to queues is by name prefix (CELERY_TASK_ROUTES). Services start tasks
through annotations.dispatch, never by importing this module.
"""

from celery import shared_task

from . import dispatch
from .models import Project
from .services import (
    captions,
    clip_index,
    gold,
    ingest,
    maintenance,
    prelabel,
    prelabel_run,
    registry,
    training,
    training_triggers,
)


@shared_task(name=dispatch.PROCESS_CLIP, acks_late=True, max_retries=3, default_retry_delay=30)
def process_clip(clip_id: int) -> str:
    return ingest.process_clip(clip_id)


@shared_task(name="affectloop.media.requeue_stale_clips")
def requeue_stale_clips(older_than_seconds: int = 600) -> int:
    return maintenance.requeue_stale_clips(older_than_seconds)


@shared_task(name=dispatch.PRELABEL_CLIPS, acks_late=True)
def prelabel_clips(clip_ids: list[int]) -> dict:
    return prelabel_run.prelabel_clips(clip_ids)


@shared_task(name=dispatch.CAPTION_CLIPS, acks_late=True)
def caption_clips(clip_ids: list[int]) -> dict:
    """Human-centric captions of unverified clips (auxiliary training data), on a GPU worker; idempotent."""
    return captions.caption_clips(clip_ids)


@shared_task(name=dispatch.ENQUEUE_CAPTIONS)
def enqueue_captions(project_id: int | None = None) -> dict:
    """Queue caption_clips for one project, or (beat) every active project whose runs mix captions in
    (config.training.caption_ratio > 0: captioning costs GPU time). Torch-free, on the default queue."""
    chosen = Project.objects.filter(archived=False)
    if project_id is not None:
        chosen = chosen.filter(pk=project_id)
    else:
        chosen = [p for p in chosen if captions.wanted(p)]
    return {p.slug: n for p in chosen if (n := captions.enqueue_captions(p))}


@shared_task(name=dispatch.REGISTER_CONFIGURED_MODELS, acks_late=True)
def register_configured_models(project_id: int, backends: list[str] | None = None) -> dict:
    """On a GPU worker, which has the model files: register what the project's config names, then queue."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return {}
    outcome = registry.register_configured(project, backends)
    prelabel.enqueue_prelabel(project)
    return outcome


@shared_task(name="affectloop.prelabel.rescore")
def rescore_priorities() -> dict:
    """Beat: re-score the queue of every project whose verified pool has grown (novelty goes stale)."""
    return {p.slug: n for p in Project.objects.filter(archived=False)
            if (n := prelabel_run.rescore_priorities(p))}


@shared_task(name=dispatch.ENQUEUE_PRELABEL)
def enqueue_prelabel(project_id: int | None = None) -> int:
    return maintenance.enqueue_prelabel(project_id)


@shared_task(name=dispatch.REINDEX_PROJECT, acks_late=True)
def reindex_project(project_id: int, terms: list[str] | None = None, after: int = 0) -> int:
    """After a vocabulary change: the clip index stores resolved terms and families, and the gold answers
    their scores over canonical terms (once, on the rebuild's first slice)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return 0
    if after == 0:
        gold.rescore(project, terms)
    return clip_index.reindex_project(project, terms, after=after)


@shared_task(name=dispatch.RESPLIT, acks_late=True)
def resplit(project_id: int) -> int:
    """After the split ratios or the group key changed: every clip's stored split, off the web request."""
    project = Project.objects.filter(pk=project_id).first()
    return clip_index.resplit(project) if project is not None else 0


# Acknowledged on receipt, with its own time limit: a run takes hours, and neither the global task limit
# nor a broker's redelivery of an unacknowledged message may cut it short or start it twice. A lost worker
# is found by the run's heartbeat instead (train_watch). Idempotent: a run that is not queued is left alone.
@shared_task(name=dispatch.TRAIN_RUN, acks_late=False, reject_on_worker_lost=False,
             time_limit=training.TIME_LIMIT_S + 300, soft_time_limit=training.TIME_LIMIT_S)
def train_run(run_id: int) -> str:
    return training.execute(run_id)


@shared_task(name=dispatch.TRAIN_WATCH)
def train_watch() -> dict:
    """Beat: resume (or fail) runs whose worker was lost. Routed to the default queue: the train worker is
    busy with the run itself."""
    return training.watch()


@shared_task(name="affectloop.train.trigger")
def train_trigger() -> dict:
    """Beat: start the runs that config.training.trigger (verified or schedule) says are due."""
    return training_triggers.start_due_runs()


@shared_task(name="affectloop.train.clean_adapters")
def clean_adapters() -> dict:
    """Beat, daily, on a training worker (it has the model directory): remove long-retired adapters."""
    return training.clean_retired_adapters()


@shared_task(name=dispatch.BUILD_EXPORT, acks_late=True)
def build_export(export_id: int) -> str:
    """Write a dataset export's zip (services.exports.build): idempotent, so a redelivery is harmless."""
    from .services import exports

    return exports.build(export_id)


@shared_task(name="affectloop.media.expire_exports")
def expire_exports() -> int:
    """Beat: delete the export downloads past their expiry."""
    from .services import exports

    return exports.expire_exports()


@shared_task(name=dispatch.ERASE_CLIPS, acks_late=True)
def erase_clips(project_id: int, where: list[str], actor_id: int | None) -> int:
    """Erase every clip whose metadata matches (services.erasure): a redelivery finds nothing left, and erases
    nothing twice."""
    from .services import erasure

    return erasure.run_erasure(project_id, where, actor_id)


@shared_task(name=dispatch.SCRUB_TRAINING_DATA, acks_late=True)
def scrub_erased(project_id: int, file_names: list[str]) -> int:
    """After an erasure, on a training worker: the erased clips' lines out of the runs' JSONL (idempotent)."""
    from .services import erasure

    return erasure.scrub_training_data(project_id, file_names)


@shared_task(name=dispatch.LABELSTUDIO_SYNC)
def labelstudio_sync(project_id: int, step: str, actor_id: int | None) -> str:
    """A Label Studio push or pull (services.labelstudio): both are idempotent, so a redelivery adds nothing."""
    from .services import labelstudio

    return labelstudio.run_step(project_id, step, actor_id)


@shared_task(name="affectloop.reports.dashboard")
def refresh_dashboards() -> dict:
    """Beat: every live project's dashboard figures, stored for the page (services.dashboard)."""
    from .services import dashboard

    return dashboard.refresh_all()


@shared_task(name=dispatch.REFRESH_DASHBOARD)
def refresh_dashboard(project_id: int) -> float | None:
    from .services import dashboard

    return dashboard.refresh_one(project_id)
