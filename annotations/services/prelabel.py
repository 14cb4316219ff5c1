"""Pre-labeling: which clips need it, the per-project configuration, and the worker-side run.

Configuration lives in `Project.config["prelabel"]`:

    {"backends": {"internvl": {"model": "OpenGVLab/InternVL3-1B-hf" | "/models/ivl", "adapter": null,
                               "num_frames": 8},
                  "affectgpt": {"model": "/models/affectgpt", "checkpoint": "/models/affectgpt/ckpt.pth"}},
     "fusion": "union" | {<a fitted ml.fusion dict>},
     "batch_size": 8}

The active InternVL adapter comes from the model registry (an active ModelVersion) when there is one.
A clip needs pre-labeling when it is ready, still needs humans, and lacks a prediction for the current
version of an enabled backend; so a newer active model re-labels, and a repeated task adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from ..models import Clip, ModelVersion, Prediction, Project
from . import audit

log = logging.getLogger(__name__)

KINDS = ("internvl", "affectgpt")
NEEDS_HUMANS = (Clip.LabelState.UNLABELED, Clip.LabelState.PRELABELED, Clip.LabelState.IN_PROGRESS)
REQUEUE_AFTER = timedelta(hours=1)
OOM_AT_ONE = "CUDA out of memory at batch size 1"


def _prompt_versions() -> dict[str, str]:
    from ml.prompts import AFFECTGPT_PROMPT_VERSION, INTERNVL_PROMPT_VERSION  # torch-free

    return {"internvl": INTERNVL_PROMPT_VERSION, "affectgpt": AFFECTGPT_PROMPT_VERSION}


PROMPT_VERSIONS = _prompt_versions()


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class BackendSpec:
    kind: str
    model: str
    adapter: str | None = None
    checkpoint: str | None = None
    num_frames: int = 8
    registry_id: int | None = None   # the ModelVersion it came from, if any

    def version(self) -> str:
        from ml.versions import affectgpt_version, internvl_version  # torch-free

        if self.kind == "internvl":
            return internvl_version(self.model, self.adapter, self.num_frames)
        return affectgpt_version(self.model, self.checkpoint)


@dataclass(frozen=True)
class PrelabelConfig:
    backends: tuple[BackendSpec, ...]
    fusion: str | dict
    batch_size: int
    active_learning: dict


def prelabel_config(project: Project) -> PrelabelConfig:
    raw = (project.config or {}).get("prelabel") or {}
    if not isinstance(raw, dict):
        raise ConfigError("config.prelabel must be an object")
    backends_raw = raw.get("backends") or {}
    unknown = set(backends_raw) - set(KINDS)
    if unknown:
        raise ConfigError(f"unknown backend(s) {sorted(unknown)}; use {', '.join(KINDS)}")
    specs = []
    for kind in KINDS:
        spec = backends_raw.get(kind)
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"config.prelabel.backends.{kind} must be an object")
        if not spec.get("enabled", True):
            continue
        if not isinstance(spec.get("model"), str) or not spec["model"]:
            raise ConfigError(f"config.prelabel.backends.{kind}.model is required")
        frames = spec.get("num_frames", 8)
        if not isinstance(frames, int) or not 1 <= frames <= 64:
            raise ConfigError(f"config.prelabel.backends.{kind}.num_frames must be an integer 1..64")
        model, adapter, registry_id = spec["model"], spec.get("adapter"), None
        if kind == "internvl":
            active = ModelVersion.objects.filter(project=project, backend=kind, status="active").first()
            if active:
                model, adapter, registry_id = active.base_model, active.adapter_path or None, active.pk
        specs.append(BackendSpec(kind, model, adapter, spec.get("checkpoint"), frames, registry_id))
    batch_size = raw.get("batch_size", 8)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 256:
        raise ConfigError("config.prelabel.batch_size must be an integer 1..256")
    fusion = raw.get("fusion", "union")
    from ml.fusion import STRATEGIES

    if isinstance(fusion, str) and fusion not in STRATEGIES:
        raise ConfigError(f"unknown fusion strategy {fusion!r}; use one of {', '.join(STRATEGIES)}")
    config = PrelabelConfig(tuple(specs), fusion, batch_size, (project.config or {}).get("active_learning") or {})
    active_strategy(config)  # fail on a bad strategy now, not after the GPU work
    return config


def fused_version(config: PrelabelConfig, versions: list[str]) -> str:
    name = config.fusion if isinstance(config.fusion, str) else config.fusion.get("strategy", "fitted")
    digest = hashlib.sha256("|".join(sorted(versions)).encode()).hexdigest()[:12]
    if isinstance(config.fusion, dict):
        import json

        digest += hashlib.sha256(json.dumps(config.fusion, sort_keys=True).encode()).hexdigest()[:6]
    return f"fused:{name}+{digest}"


def _versions(config: PrelabelConfig) -> list[str]:
    try:
        return [spec.version() for spec in config.backends]
    except OSError as exc:
        raise ConfigError(f"a configured model file cannot be read: {exc.strerror} ({exc.filename})") from None


def clips_needing_prelabel(project: Project, config: PrelabelConfig | None = None):
    config = config or prelabel_config(project)
    versions = _versions(config)
    if not versions:
        return Clip.objects.none()
    wanted = versions + [fused_version(config, versions)]
    return (project.clips.filter(status=Clip.Status.READY, label_state__in=NEEDS_HUMANS, prelabel_error="")
            .annotate(have=Count("predictions", filter=Q(predictions__model_version__in=wanted)))
            .filter(have__lt=len(wanted)))


def enqueue_prelabel(project: Project, *, force_ids: list[int] | None = None) -> int:
    """Queue the clips that need pre-labeling, in batches; safe to call often (beat calls it)."""
    from ..tasks import prelabel_clips

    config = prelabel_config(project)
    if not config.backends:
        return 0
    now = timezone.now()
    qs = clips_needing_prelabel(project, config)
    if force_ids is None:
        qs = qs.filter(Q(prelabel_queued_at__isnull=True) | Q(prelabel_queued_at__lt=now - REQUEUE_AFTER))
    else:
        qs = qs.filter(pk__in=force_ids)
    candidates = list(qs.order_by("id").values_list("id", flat=True)[:5000])
    if not candidates:
        return 0
    with transaction.atomic():
        # Two enqueue jobs at once must not both send the same clips: lock the rows (PostgreSQL; SQLite
        # serialises writers anyway) and re-check the queued mark under the lock.
        locked = Clip.objects.select_for_update(skip_locked=True).filter(pk__in=candidates)
        if force_ids is None:
            locked = locked.filter(Q(prelabel_queued_at__isnull=True) | Q(prelabel_queued_at__lt=now - REQUEUE_AFTER))
        ids = list(locked.order_by("id").values_list("id", flat=True))
        Clip.objects.filter(pk__in=ids).update(prelabel_queued_at=now)
        for start in range(0, len(ids), config.batch_size):
            batch = ids[start:start + config.batch_size]
            transaction.on_commit(lambda batch=batch: prelabel_clips.delay(batch))
    return len(ids)


def rerun_prelabel(clip_ids: list[int], *, actor=None) -> int:
    """Admin action: forget the selected clips' current machine predictions and errors, then queue them.
    Human annotations are never touched."""
    n = 0
    for project in Project.objects.filter(clips__pk__in=clip_ids).distinct():
        config = prelabel_config(project)
        versions = _versions(config)
        ids = list(project.clips.filter(pk__in=clip_ids).values_list("id", flat=True))
        with transaction.atomic():
            Prediction.objects.filter(clip_id__in=ids, model_version__in=versions + [fused_version(config, versions)]
                                      ).delete()
            Clip.objects.filter(pk__in=ids).update(prelabel_error="", prelabel_queued_at=None)
            audit.record("prelabel.rerun", project, actor=actor, project=project, changes={"clips": ids})
        n += enqueue_prelabel(project, force_ids=ids)
    return n


# --- worker side ------------------------------------------------------------------------------------
# Loaded models, per worker process, keyed by what identifies them: loaded lazily on the first task that
# needs them (never at worker start) and kept for the process's life. One process per GPU.
_BACKENDS: dict[tuple, object] = {}
# A threaded worker (the embedded default) could otherwise load a model twice, or run two batches on one
# GPU at once: one lock for loading and running models in this process.
_GPU_LOCK = threading.RLock()


def get_backend(spec: BackendSpec):
    """The process's model for this spec. One InternVL base per model, with adapters switched on it (a new
    active adapter must not load another base); anything whose weights changed on disk is reloaded."""
    key = (spec.kind, spec.model, spec.num_frames)
    backend = _BACKENDS.get(key)
    if backend is not None and spec.kind == "affectgpt" and backend.model_version != spec.version():
        backend = None  # a different or rewritten checkpoint
    if backend is None:
        from ml.prelabel import load_backend  # worker-only: imports torch

        t = time.perf_counter()
        _BACKENDS.pop(key, None)
        _free_cuda_memory()
        backend = load_backend(spec.kind, spec.model, checkpoint=spec.checkpoint, frames=spec.num_frames)
        _BACKENDS[key] = backend
        log.info("loaded %s in %.1f s", backend.model_version, time.perf_counter() - t)
    if spec.kind == "internvl":
        backend.use_adapter(backend.add_adapter(spec.adapter) if spec.adapter else None)
        if backend.model_version != spec.version():  # rewritten adapter files under the same name
            _BACKENDS.pop(key, None)
            return get_backend(spec)
    return backend


def predict_with_oom_fallback(backend, inputs: list) -> list:
    """CUDA out of memory halves the batch and retries each half; a single clip that still does not fit
    is reported as that clip's error instead of failing the others."""
    try:
        return backend.predict(inputs)
    except Exception as exc:  # noqa: BLE001 - only OOM is handled; everything else re-raises
        if not _is_oom(exc):
            raise
    # Retried outside the except block: the exception's traceback would keep the failed attempt's
    # activations alive, and every smaller retry would run out of memory too.
    _free_cuda_memory()
    if len(inputs) == 1:
        from ml.types import Prediction as MLPrediction

        return [MLPrediction(clip_id=inputs[0].clip_id, labels=[], raw_text="", model_version=backend.model_version,
                             prompt_tokens=0, seconds=0.0, error=OOM_AT_ONE)]
    half = len(inputs) // 2
    log.warning("CUDA out of memory at batch %d; retrying as %d + %d", len(inputs), half, len(inputs) - half)
    return predict_with_oom_fallback(backend, inputs[:half]) + predict_with_oom_fallback(backend, inputs[half:])


def _is_oom(exc: BaseException) -> bool:
    import torch  # worker-only

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # Some kernels raise a plain RuntimeError with CUDA's message instead of the dedicated type.
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def _free_cuda_memory() -> None:
    import torch  # worker-only

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _store(clip: Clip, pred, spec: BackendSpec | None, backend_name: str) -> bool:
    """One Prediction row; a repeated task hits the unique constraint and adds nothing."""
    try:
        with transaction.atomic():
            Prediction.objects.create(
                clip=clip, backend=backend_name, model_version=pred.model_version,
                model_id=spec.registry_id if spec else None,
                labels=[{"term": lab.term, "score": lab.score, "source": lab.source} for lab in pred.labels],
                raw_text=pred.raw_text, prompt_version=PROMPT_VERSIONS.get(backend_name, ""),
                flags=list(pred.flags), seconds=pred.seconds)
        return True
    except IntegrityError:
        return False


def prelabel_clips(clip_ids: list[int]) -> dict:
    """Run every enabled backend over the clips that still lack its prediction, then fuse and score."""
    from ml.types import ClipInput

    stats = {"stored": 0, "skipped": 0, "errors": 0}
    retry_later: set[int] = set()
    clips = Clip.objects.filter(pk__in=clip_ids, status=Clip.Status.READY).select_related("project")
    by_project: dict[int, list[Clip]] = {}
    for clip in clips:
        by_project.setdefault(clip.project_id, []).append(clip)
    for project_clips in by_project.values():
        project = project_clips[0].project
        config = prelabel_config(project)
        versions = _versions(config)
        for spec, version in zip(config.backends, versions):
            have = set(Prediction.objects.filter(clip__in=project_clips, model_version=version)
                       .values_list("clip_id", flat=True))
            todo = [c for c in project_clips if c.pk not in have and c.label_state in NEEDS_HUMANS
                    and not c.prelabel_error]
            stats["skipped"] += len(project_clips) - len(todo)
            if not todo:
                continue
            by_id = {str(c.pk): c for c in todo}
            inputs = [ClipInput(clip_id=str(c.pk), video_path=c.file.path, transcript=c.transcript) for c in todo]
            try:
                with _GPU_LOCK:
                    predictions = predict_with_oom_fallback(get_backend(spec), inputs)
            except Exception as exc:  # noqa: BLE001 - recorded on the clips, so beat does not retry blindly
                log.exception("pre-labeling with %s failed for clips %s", spec.kind, list(by_id))
                message = f"{spec.kind}: {type(exc).__name__}: {user_safe(str(exc))}"[:2000]
                Clip.objects.filter(pk__in=[c.pk for c in todo]).update(prelabel_error=message)
                for clip in todo:
                    clip.prelabel_error = message
                stats["errors"] += len(todo)
                continue
            for pred in predictions:
                clip = by_id[pred.clip_id]
                if pred.error == OOM_AT_ONE:
                    # Maybe transient (another process held the memory): stays queued, so the beat job
                    # tries again after REQUEUE_AFTER rather than marking the clip failed for good.
                    log.warning("clip %s: %s", clip.pk, OOM_AT_ONE)
                    stats["errors"] += 1
                    retry_later.add(clip.pk)
                    continue
                if pred.error:
                    stats["errors"] += 1
                    clip.prelabel_error = f"{spec.kind}: {user_safe(pred.error)}"[:2000]
                    Clip.objects.filter(pk=clip.pk).update(prelabel_error=clip.prelabel_error)
                    continue
                stats["stored"] += _store(clip, pred, spec, spec.kind)
        _fuse_and_score(project, config, versions, project_clips)
        # Whatever this run did not finish (taken by a human meanwhile, or failed) is no longer queued.
        Clip.objects.filter(pk__in=[c.pk for c in project_clips if c.pk not in retry_later]).update(
            prelabel_queued_at=None)
    return stats


def user_safe(message: str) -> str:
    """Error text shown to project members: without server paths."""
    from django.conf import settings

    message = message.replace(str(settings.MEDIA_ROOT), "<media>")
    return re.sub(r"(?:file:)?/(?:[\w.@+-]+/)+[\w.@+-]*", "<path>", message)


def _fuse_and_score(project: Project, config: PrelabelConfig, versions: list[str], clips: list[Clip]) -> None:
    from ml.fusion import STRATEGIES, Fusion
    from ml.types import Label, Prediction as MLPrediction

    fusion = (STRATEGIES[config.fusion]() if isinstance(config.fusion, str) else Fusion.from_dict(config.fusion))
    fversion = fused_version(config, versions)
    strategy, pool = active_strategy(config), verified_pool(project)
    rows = Prediction.objects.filter(clip__in=clips, model_version__in=versions)
    per_clip: dict[int, dict[str, list]] = {}
    for row in rows:
        per_clip.setdefault(row.clip_id, {})[row.backend] = [
            Label(term=lab["term"], score=lab.get("score"), source=lab.get("source", row.backend)) for lab in row.labels]
    for clip in clips:
        per_backend = per_clip.get(clip.pk, {})
        if len(per_backend) < len(versions):
            continue  # a backend failed or is missing: fuse only complete sets
        fused = fusion.fuse(per_backend)
        pred = MLPrediction(clip_id=str(clip.pk), labels=[Label(f.term, f.score, "fused") for f in fused],
                            raw_text="", model_version=fversion, prompt_tokens=0, seconds=0.0)
        _store(clip, pred, None, "fused")
        signals, priority = _active_learning_score(strategy, pool, clip, per_backend)
        Clip.objects.filter(pk=clip.pk).update(priority=priority, al_signals=signals, prelabel_queued_at=None)
        Clip.objects.filter(pk=clip.pk, label_state=Clip.LabelState.UNLABELED).update(
            label_state=Clip.LabelState.PRELABELED)


def active_strategy(config: PrelabelConfig):
    from ml.active import Strategy  # torch-free

    raw = config.active_learning or {}
    try:
        if "format" in raw:
            return Strategy.from_dict(raw)
        return Strategy.named(raw.get("strategy", "combined"), seed=int(raw.get("seed", 0)))
    except ValueError as exc:
        raise ConfigError(f"config.active_learning: {exc}") from None


def verified_pool(project: Project):
    """The verified clips' labels (their accepted annotation, or the reviewer's fix): novelty's reference."""
    from ml.active import Pool

    from ..models import Review

    labels: dict[str, list[str]] = {}
    reviews = (Review.objects.filter(annotation__clip__project=project, annotation__clip__label_state="verified",
                                     decision__in=["accept", "fix"]).order_by("created_at")
               .values_list("annotation__clip_id", "decision", "fixed_labels", "annotation__labels"))
    for clip_id, decision, fixed, annotated in reviews:
        chosen = fixed if decision == "fix" else annotated
        labels[str(clip_id)] = [x["term"] if isinstance(x, dict) else str(x) for x in chosen or []]
    return Pool(labels)


def _active_learning_score(strategy, pool, clip: Clip, per_backend: dict[str, list]) -> tuple[dict, float]:
    signals = strategy.signals({str(clip.pk): per_backend}, pool)[str(clip.pk)]
    return {"strategy": strategy.name, **{k: round(v, 6) for k, v in signals.items()}}, strategy.combine(signals)
