"""Pre-labeling, the worker side: run each backend's active model over a batch, store, fuse and score.

The GPU runtime (model cache keyed by identity, GPU lock, out-of-memory halving) is `ml.runtime`; this
module turns registry rows into model specs and stores what comes back. It never touches annotations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from django.db import IntegrityError, transaction

from ml import runtime  # torch only inside its functions, which run on workers

from .. import selectors
from ..models import Clip, ModelVersion, Prediction, Project
from ..project_config import project_config
from . import prelabel
from .registry import RegistryError, resolve

log = logging.getLogger(__name__)


# This process's models (one process per GPU); empty, and free, until a task needs a model.
_CACHE = runtime.ModelCache()


def model_cache() -> runtime.ModelCache:
    return _CACHE


def spec_for(run: prelabel.Run):
    """The ml.runtime spec of a registry version; RegistryError when this worker lacks its files."""
    model = run.model
    return runtime.ModelSpec(
        kind=run.backend, model=resolve(model.base_model),
        adapter=resolve(model.adapter_path) if model.adapter_path else None,
        checkpoint=resolve(model.checkpoint_path) if model.checkpoint_path else None,
        num_frames=run.num_frames or 8, expected_version=run.version, label=model.name)


def store_prediction(clip: Clip, pred, *, backend: str, model: ModelVersion | None, prompt_version: str) -> bool:
    """One Prediction row; a repeated task (or import) hits the unique constraint and adds nothing."""
    try:
        with transaction.atomic():
            Prediction.objects.create(
                clip=clip, backend=backend, model_version=pred.model_version, model=model,
                labels=[_label_json(lab) for lab in pred.labels], raw_text=pred.raw_text,
                prompt_version=prompt_version, flags=list(pred.flags), seconds=pred.seconds)
        return True
    except IntegrityError:
        return False


def _label_json(label) -> dict:
    out = {"term": label.term, "score": label.score, "source": label.source}
    evidence = getattr(label, "evidence", None)
    if evidence is not None:
        out["support"] = [{"backend": b, "score": s} for b, s in evidence]
    return out


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
        current = prelabel.plan(project)
        waiting = set(selectors.needs_humans(Clip.objects.filter(pk__in=[c.pk for c in project_clips]))
                      .values_list("pk", flat=True))
        for run in current.runs:
            have = set(Prediction.objects.filter(clip__in=project_clips, model_version=run.version)
                       .values_list("clip_id", flat=True))
            todo = [c for c in project_clips if c.pk not in have and c.pk in waiting and not c.prelabel_error]
            stats["skipped"] += len(project_clips) - len(todo)
            if not todo:
                continue
            by_id = {str(c.pk): c for c in todo}
            inputs = [ClipInput(clip_id=str(c.pk), video_path=c.file.path, transcript=c.transcript) for c in todo]
            cache = model_cache()
            try:
                with cache.lock:
                    predictions = runtime.predict_with_oom_fallback(cache.get(spec_for(run)), inputs)
            except Exception as exc:  # noqa: BLE001 - recorded on the clips, so beat does not retry blindly
                log.exception("pre-labeling with %s failed for clips %s", run.model.name, list(by_id))
                known = isinstance(exc, (RegistryError, runtime.IdentityMismatch))
                detail = str(exc) if known else f"{type(exc).__name__}: {exc}"
                message = f"{run.backend}: {user_safe(detail)}"[:2000]
                Clip.objects.filter(pk__in=[c.pk for c in todo]).update(prelabel_error=message)
                for clip in todo:
                    clip.prelabel_error = message
                stats["errors"] += len(todo)
                continue
            for pred in predictions:
                clip = by_id[pred.clip_id]
                if pred.error == runtime.OOM_AT_ONE:
                    # Maybe transient (another process held the memory): stays queued, so the beat job
                    # tries again after REQUEUE_AFTER rather than marking the clip failed for good.
                    log.warning("clip %s: %s", clip.pk, runtime.OOM_AT_ONE)
                    stats["errors"] += 1
                    retry_later.add(clip.pk)
                    continue
                if pred.error:
                    stats["errors"] += 1
                    clip.prelabel_error = f"{run.backend}: {user_safe(pred.error)}"[:2000]
                    Clip.objects.filter(pk=clip.pk).update(prelabel_error=clip.prelabel_error)
                    continue
                stats["stored"] += store_prediction(clip, pred, backend=run.backend, model=run.model,
                                                    prompt_version=run.model.prompt_version)
        if current.runs:
            _fuse_and_score(project, current, project_clips)
        # Whatever this run did not finish (taken by a human meanwhile, or failed) is no longer queued.
        Clip.objects.filter(pk__in=[c.pk for c in project_clips if c.pk not in retry_later]).update(
            prelabel_queued_at=None)
    _evict_retired_adapters()
    return stats


def _evict_retired_adapters() -> None:
    """Free adapters that no project runs any more (a promotion retired them)."""
    if not len(_CACHE):
        return
    names = ModelVersion.objects.filter(backend="internvl", status=ModelVersion.Status.ACTIVE).exclude(
        adapter_path="").values_list("name", flat=True)
    _CACHE.retain_adapters({name.split("+", 1)[1] for name in names})


def user_safe(message: str) -> str:
    """Error text shown to project members: without server paths."""
    from django.conf import settings

    message = message.replace(str(settings.MEDIA_ROOT), "<media>").replace(str(settings.MODEL_DIR), "<models>")
    return re.sub(r"(?:file:)?/(?:[\w.@+-]+/)+[\w.@+-]*", "<path>", message)


def _fuse_and_score(project: Project, current: prelabel.Plan, clips: list[Clip]) -> None:
    fused = fuse_and_score(project, current.config, {clip: current.versions for clip in clips})
    Clip.objects.filter(pk__in=fused).update(prelabel_queued_at=None)


def fuse_and_score(project: Project, config, members: Mapping[Clip, Sequence[str]]) -> list[int]:
    """Fuse each clip's predictions of the given versions (one per backend) into a fused Prediction and set
    its active-learning priority. A clip that lacks one of its versions is left alone: only complete sets are
    fused. Returns the ids of the clips fused. The GPU worker and the prediction import both call it."""
    from ml.fusion import STRATEGIES, Fusion
    from ml.types import Label
    from ml.types import Prediction as MLPrediction

    from .vocabulary import project_vocabulary

    vocabulary = project_vocabulary(project)
    fusion_config = config.prelabel.fusion
    fusion = (STRATEGIES[fusion_config](vocabulary) if isinstance(fusion_config, str)
              else Fusion.from_dict(fusion_config, vocabulary))
    strategy = active_strategy(config, vocabulary)
    pool = verified_pool(project, vocabulary)
    wanted = {clip.pk: set(versions) for clip, versions in members.items()}
    rows = Prediction.objects.filter(clip__in=list(members), model_version__in=set().union(*wanted.values()))
    per_clip: dict[int, dict[str, list]] = {}
    for row in rows:
        if row.model_version in wanted[row.clip_id]:
            per_clip.setdefault(row.clip_id, {})[row.backend] = [
                Label(term=lab["term"], score=lab.get("score"), source=lab.get("source", row.backend))
                for lab in row.labels]
    done = []
    for clip, versions in members.items():
        per_backend = per_clip.get(clip.pk, {})
        if not versions or len(per_backend) < len(versions):
            continue  # a backend failed or is missing: fuse only complete sets
        fused = fusion.fuse(per_backend)
        pred = MLPrediction(clip_id=str(clip.pk), labels=fused, raw_text="",
                            model_version=prelabel.fused_version(config, list(versions)), prompt_tokens=0,
                            seconds=0.0)
        store_prediction(clip, pred, backend="fused", model=None, prompt_version="")
        signals = strategy.signals({str(clip.pk): per_backend}, pool)[str(clip.pk)]
        Clip.objects.filter(pk=clip.pk).update(
            priority=strategy.combine(signals),
            al_signals={"strategy": strategy.name, **{k: round(v, 6) for k, v in signals.items()}})
        Clip.objects.filter(pk=clip.pk, label_state=Clip.LabelState.UNLABELED).update(
            label_state=Clip.LabelState.PRELABELED)
        done.append(clip.pk)
    if done:
        from . import clip_index

        # The fused labels and the disagreement just changed: the managers' filters read these.
        clip_index.index_clips(Clip.objects.filter(pk__in=done).select_related("project"))
    return done


def active_strategy(config, vocabulary=None):
    from ml.active import Strategy  # torch-free

    al = config.active_learning
    if al.fitted is not None:
        return Strategy.from_dict(al.fitted, vocabulary)
    return Strategy.named(al.strategy, seed=al.seed, vocabulary=vocabulary)


RESCORE_GROWTH = 0.1  # re-score when the verified pool grew by a tenth (and by at least RESCORE_MIN clips)
RESCORE_MIN = 20
RESCORE_CHUNK = 500  # clips per step: their predictions are loaded together, then written in one statement


def rescore_priorities(project: Project, *, force: bool = False) -> int:
    """Novelty is measured against the verified pool, so priorities go stale as it grows: when it has grown
    enough since the last scoring, score every clip that still needs humans again, from its newest
    prediction per backend. Returns the clips re-scored (0 when not due). Never due for a strategy that does not
    weigh novelty (the default, `families`, reads only the predictions): its priorities cannot go stale."""
    from ml.types import Label

    from .vocabulary import project_vocabulary

    config = project_config(project)
    vocabulary = project_vocabulary(project)
    strategy = active_strategy(config, vocabulary)
    if not force and not strategy.weights.get("novelty"):
        return 0
    pool_size = selectors.verified_clips(project.clips.all()).count()
    grown = pool_size - project.scored_pool_size
    if not force and (grown < RESCORE_MIN or grown < RESCORE_GROWTH * max(project.scored_pool_size, 1)):
        return 0
    pool = verified_pool(project, vocabulary)
    done, last = 0, 0
    base = selectors.needs_humans(project.clips.filter(status=Clip.Status.READY, priority__isnull=False))
    while True:
        ids = list(base.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:RESCORE_CHUNK])
        if not ids:
            break
        last = ids[-1]
        per_clip: dict[int, dict[str, list]] = {}
        for row in Prediction.objects.filter(clip_id__in=ids).exclude(backend="fused").order_by("-created_at", "-id"):
            per_clip.setdefault(row.clip_id, {}).setdefault(row.backend, [
                Label(term=lab["term"], score=lab.get("score"), source=lab.get("source", row.backend))
                for lab in row.labels])
        signals = strategy.signals({str(k): v for k, v in per_clip.items()}, pool)
        scored = [Clip(pk=int(clip_id), priority=strategy.combine(values),
                       al_signals={"strategy": strategy.name, **{k: round(v, 6) for k, v in values.items()}},
                       disagreement=values.get("disagreement"))
                  for clip_id, values in signals.items()]
        # One statement per chunk, not one per clip: a queue of a million clips is re-scored by beat.
        Clip.objects.bulk_update(scored, ["priority", "al_signals", "disagreement"], batch_size=RESCORE_CHUNK)
        done += len(scored)
    Project.objects.filter(pk=project.pk).update(scored_pool_size=pool_size)
    project.scored_pool_size = pool_size
    return done


def verified_pool(project: Project, vocabulary=None):
    """The verified clips' labels: novelty's reference."""
    from ml.active import Pool

    return Pool({str(clip_id): labels for clip_id, labels in selectors.verified_labels(project).items()},
                vocabulary)
