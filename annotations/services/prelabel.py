"""Pre-labeling, the queue side: which clips need which model, and sending them to the GPU workers.

Reads only the database: the models that run are the backends' *active* registry versions
(services/registry.py), and a clip needs a backend when it still needs humans and lacks a prediction of
that version (`ml.versions.prediction_version`, from the registered identity and the configured frames).
So the web process and beat decide without the model files, a newer active version re-labels, and a
repeated task adds nothing. The worker side is services/prelabel_run.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from .. import dispatch, selectors
from ..models import Clip, ModelVersion, Prediction, Project
from ..project_config import ProjectConfig, project_config
from . import audit

REQUEUE_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Run:
    """One backend as it runs now: its active registry version and the version its predictions carry."""

    backend: str
    model: ModelVersion
    version: str
    num_frames: int | None


@dataclass(frozen=True)
class Plan:
    config: ProjectConfig
    runs: tuple[Run, ...]
    missing: tuple[str, ...] = field(default=())  # enabled backends without an active registered model

    @property
    def versions(self) -> list[str]:
        return [run.version for run in self.runs]

    @property
    def fused_version(self) -> str | None:
        return fused_version(self.config, self.versions) if self.runs else None

    @property
    def wanted(self) -> list[str]:
        return self.versions + [self.fused_version] if self.runs else []


def plan(project: Project) -> Plan:
    """What pre-labels this project's clips now, from the configuration and the registry alone."""
    from ml.versions import prediction_version  # torch-free

    from .registry import active_versions, unregistered_backends

    config = project_config(project)
    active = active_versions(project)
    stale = set(unregistered_backends(project, active))
    runs, missing = [], []
    for name, spec in config.backends().items():
        version = active.get(name)
        if version is None or name in stale:
            missing.append(name)
            continue
        frames = getattr(spec, "num_frames", None)
        runs.append(Run(name, version, prediction_version(version.name, frames), frames))
    return Plan(config, tuple(runs), tuple(missing))


def fused_version(config: ProjectConfig, versions: list[str]) -> str:
    fusion = config.prelabel.fusion
    name = fusion if isinstance(fusion, str) else fusion.get("strategy", "fitted")
    digest = hashlib.sha256("|".join(sorted(versions)).encode()).hexdigest()[:12]
    if isinstance(fusion, dict):
        digest += hashlib.sha256(json.dumps(fusion, sort_keys=True).encode()).hexdigest()[:6]
    return f"fused:{name}+{digest}"


def clips_needing_prelabel(project: Project, current: Plan | None = None):
    current = current or plan(project)
    if not current.runs:
        return Clip.objects.none()
    return (_waiting_for_models(project)
            .annotate(have=Count("predictions", filter=Q(predictions__model_version__in=current.wanted)))
            .filter(have__lt=len(current.wanted)))


def _waiting_for_models(project: Project):
    return selectors.needs_humans(project.clips.filter(status=Clip.Status.READY, prelabel_error=""))


def enqueue_prelabel(project: Project, *, force_ids: list[int] | None = None) -> int:
    """Queue the clips that need pre-labeling, in batches; safe to call often (beat calls it). An enabled
    backend whose configured model is not registered yet is sent to a worker to register first."""
    current = plan(project)
    if current.missing and _waiting_for_models(project).exists():
        dispatch.register_configured_models(project.pk)
    if not current.runs:
        return 0
    now = timezone.now()
    fresh = Q(prelabel_queued_at__isnull=True) | Q(prelabel_queued_at__lt=now - REQUEUE_AFTER)
    qs = clips_needing_prelabel(project, current)
    qs = qs.filter(fresh) if force_ids is None else qs.filter(pk__in=force_ids)
    candidates = list(qs.order_by("id").values_list("id", flat=True)[:5000])
    if not candidates:
        return 0
    with transaction.atomic():
        # Two enqueue jobs at once must not both send the same clips: lock the rows (PostgreSQL; SQLite
        # serialises writers anyway) and re-check the queued mark under the lock.
        locked = Clip.objects.select_for_update(skip_locked=True).filter(pk__in=candidates)
        if force_ids is None:
            locked = locked.filter(fresh)
        ids = list(locked.order_by("id").values_list("id", flat=True))
        Clip.objects.filter(pk__in=ids).update(prelabel_queued_at=now)
        batch_size = current.config.prelabel.batch_size
        for start in range(0, len(ids), batch_size):
            dispatch.prelabel_clips(ids[start:start + batch_size])
    return len(ids)


@dataclass
class RerunResult:
    queued: int
    reasons: list[str]

    def message(self) -> str:
        if self.queued:
            return f"{self.queued} clip(s) queued for pre-labeling."
        return "No clip was queued: " + ("; ".join(self.reasons) or "nothing to do") + "."


def rerun_prelabel(clip_ids: list[int], *, actor=None) -> RerunResult:
    """Admin action: forget the selected clips' current machine predictions and errors, then queue them.
    Human annotations are never touched. Says why when nothing could be queued."""
    result = RerunResult(0, [])
    for project in Project.objects.filter(clips__pk__in=clip_ids).distinct():
        current = plan(project)
        clips = project.clips.filter(pk__in=clip_ids)
        ids = list(clips.values_list("id", flat=True))
        with transaction.atomic():
            Prediction.objects.filter(clip_id__in=ids, model_version__in=current.wanted).delete()
            Clip.objects.filter(pk__in=ids).update(prelabel_error="", prelabel_queued_at=None)
            audit.record("prelabel.rerun", project, actor=actor, project=project, changes={"clips": ids})
        result.queued += enqueue_prelabel(project, force_ids=ids)
        result.reasons += _why_not(project, current, clips)
    return result


def _why_not(project: Project, current: Plan, clips) -> list[str]:
    reasons = []
    if not current.config.backends():
        reasons.append(f"{project.name} has no pre-labeling backend configured")
    for name in current.missing:
        reasons.append(f"{name} has no registered model yet (a worker registers the configured one; or run "
                       f"manage.py register_model)")
    done = clips.exclude(pk__in=selectors.needs_humans(clips).values("pk"))
    for state, n in done.values_list("label_state").annotate(n=Count("id")).order_by("label_state"):
        reasons.append(f"{n} clip(s) are {state}; only clips that still need humans are pre-labeled")
    not_ready = clips.exclude(status=Clip.Status.READY).count()
    if not_ready:
        reasons.append(f"{not_ready} clip(s) are not ready yet")
    return reasons


# --- reactions to changes ----------------------------------------------------------------------------------
def _clear_errors(project: Project) -> int:
    return selectors.needs_humans(project.clips.exclude(prelabel_error="")).update(prelabel_error="",
                                                                                   prelabel_queued_at=None)


def models_changed(project: Project) -> None:
    """A new active model: earlier errors may have been the old model's, so every waiting clip is eligible."""
    _clear_errors(project)
    dispatch.enqueue_prelabel(project.pk)


def config_changed(project: Project, changes: dict) -> None:
    """The pre-labeling configuration changed: clear the errors it may have caused and queue again; a new
    model, adapter or checkpoint is registered first, on a worker that has the files."""
    from .registry import changed_model_backends

    _clear_errors(project)
    changed = changed_model_backends(changes)
    if changed:
        dispatch.register_configured_models(project.pk, changed)
    else:
        dispatch.enqueue_prelabel(project.pk)


def mark_waiting_clips(project: Project, error: str) -> int:
    """A backend's model cannot be registered: say so on the clips waiting for it, so beat stops retrying."""
    from .prelabel_run import user_safe

    return _waiting_for_models(project).update(prelabel_error=user_safe(error)[:2000])
