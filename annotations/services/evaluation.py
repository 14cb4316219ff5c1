"""Evaluation of a finished training run, and the auto-promotion rule (worker side).

Every run that trained successfully is scored on the TEST split of its own snapshot, side by side:

- "candidate": the new adapter;
- "active": the project's active InternVL version (its adapter if it has one, else its bare base), when there
  is one (if the active version *is* the candidate's files, it is scored all the same);
- "base": the candidate's base model without an adapter.

The test split is disjoint from train and val by construction (one split per clip in the snapshot), so no
model is scored on the clips this run trained on; the clip names evaluated are stored. Generation goes
through the production inference code (ml.backends.internvl.InternVLBackend.predict: same prompt, frames,
greedy decoding and label parsing as pre-labeling); the base is loaded once per base model and the adapters
are switched on it (peft load_adapter / set_adapter; None = the bare base).

Scores: the emotion-wheel metric over the project vocabulary (ml.metrics.vocabulary_scores, term level as
training's own evaluation, family level beside it) and, where an emotion-wheel folder is configured
(settings.WHEEL_DIR or $AFFECTLOOP_WHEEL_DIR: the project config has no wheel key), the official wheel
metric (level 1). Every figure has n and a 95% bootstrap interval (clips resampled, RESAMPLES times, seed
SEED); the candidate's F gain over the reference (the active version, else the base) has a paired bootstrap
interval.

Promotion (`decide`): when config.training.auto_promote is on and all three hold -- the test split has at
least config.training.min_test_clips clips (default MIN_TEST_CLIPS), the candidate's term-level F
beats the reference's by at least config.training.promote_margin, and the paired bootstrap's lower 95% bound
of that gain is above zero -- the candidate is promoted through registry.promote (audited there). The
reasons either way are stored. A manager can still promote by hand (registry.promote).

Torch is imported only inside `score_models` (worker-only): this module imports cheaply.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings

from ..models import ModelVersion, SnapshotItem, TrainingRun
from ..project_config import MIN_TEST_CLIPS, project_config  # MIN_TEST_CLIPS: the config's default
from . import registry

log = logging.getLogger(__name__)

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
PRIMARY_LEVEL = "term"  # the level training's own evaluation (ml.training.evaluation) reports
LEVELS = ("term", "family")
WHEEL_LEVEL = 1
MODELS = ("candidate", "active", "base")


# --- what is scored ----------------------------------------------------------------------------------------
def test_items(run: TrainingRun) -> list[dict]:
    """The test split of the run's snapshot, sorted by clip name: [{"name", "video", "transcript", "labels"}]."""
    from django.core.files.storage import default_storage

    rows = run.snapshot.items.filter(split=SnapshotItem.Split.TEST).values_list(
        "clip_name", "clip__file", "transcript", "labels")
    return [{"name": name, "video": str(Path(default_storage.path(file_name)).resolve()),
             "transcript": transcript, "labels": list(labels)}
            for name, file_name, transcript, labels in sorted(rows, key=lambda row: row[0])]


def wheel_dir() -> str | None:
    return getattr(settings, "WHEEL_DIR", None) or os.environ.get("AFFECTLOOP_WHEEL_DIR") or None


def _model_specs(candidate: ModelVersion) -> dict[str, dict]:
    """name -> {"version", "base", "adapter"} (model references, relative to the model directory)."""
    specs = {"candidate": {"version": candidate.name, "base": candidate.base_model,
                           "adapter": candidate.adapter_path or None}}
    active = ModelVersion.objects.filter(project=candidate.project, backend="internvl",
                                         status=ModelVersion.Status.ACTIVE).first()
    if active is not None:
        specs["active"] = {"version": active.name, "base": active.base_model, "adapter": active.adapter_path or None}
    specs["base"] = {"version": None, "base": candidate.base_model, "adapter": None}
    return specs


def score_models(specs: dict[str, dict], items: list[dict], *, num_frames: int, max_new_tokens: int,
                 batch_size: int = 8) -> dict[str, dict[str, list[str]]]:
    """model name -> clip name -> predicted terms, each model through InternVLBackend.predict; one backend
    (one loaded base) per base model, adapters switched on it."""
    # Worker-only: torch, transformers and peft.
    from ml.backends.internvl import InternVLBackend
    from ml.types import ClipInput

    clips = [ClipInput(item["name"], item["video"], item["transcript"]) for item in items]
    backends: dict[str, InternVLBackend] = {}
    out: dict[str, dict[str, list[str]]] = {}
    for name, spec in specs.items():
        backend = backends.get(spec["base"])
        if backend is None:
            backend = backends[spec["base"]] = InternVLBackend(
                registry.resolve(spec["base"]), num_frames=num_frames, max_new_tokens=max_new_tokens,
                batch_size=batch_size)
        backend.use_adapter(backend.add_adapter(registry.resolve(spec["adapter"])) if spec["adapter"] else None)
        predictions = backend.predict(clips)
        failed = [p for p in predictions if p.error]
        if failed:
            raise RuntimeError(f"{name}: clip {failed[0].clip_id} could not be read: {failed[0].error}")
        out[name] = {p.clip_id: [label.term for label in p.labels] for p in predictions}
    return out


# --- figures -----------------------------------------------------------------------------------------------
def figures(gold: dict[str, list[str]], predicted: dict[str, dict[str, list[str]]], vocabulary,
            wheel=None) -> dict:
    """Per model: term-level precision/recall/F with n and intervals at the top, {"vocabulary": {level:
    ...}} and {"wheel": ...} beside; "paired_gain" of the candidate over the reference."""
    from ml.scoring_bootstrap import paired_bootstrap, score_interval, vocabulary_pairs, wheel_pairs

    names = list(gold)
    opts = {"resamples": RESAMPLES, "seed": SEED, "confidence": CONFIDENCE}
    pairs: dict[str, tuple] = {}
    out: dict = {}
    for model, labels in predicted.items():
        entry: dict = {"vocabulary": {}}
        for level in LEVELS:
            p, r = vocabulary_pairs(gold, labels, vocabulary, level=level, names=names)
            entry["vocabulary"][level] = score_interval(p, r, **opts)
            if level == PRIMARY_LEVEL:
                pairs[model] = (p, r)
        if wheel is not None:
            entry["wheel"] = score_interval(*wheel_pairs(gold, labels, wheel, WHEEL_LEVEL, names=names), **opts)
        entry.update(entry["vocabulary"][PRIMARY_LEVEL])
        out[model] = entry
    reference = "active" if "active" in predicted else "base"
    out["reference"] = reference
    out["paired_gain"] = {"against": reference, "level": PRIMARY_LEVEL,
                          **paired_bootstrap(pairs["candidate"], pairs[reference], **opts)}
    return out


def decide(evaluation: dict, *, auto_promote: bool, margin: float, min_test_clips: int | None = None) -> dict:
    """The auto-promotion rule on stored figures: {"promote": bool, "reasons": [...], "checks": {...}}.
    Reasons say why it does or does not promote, one per check (and one when auto_promote is off).
    `min_test_clips` defaults to MIN_TEST_CLIPS."""
    min_test_clips = MIN_TEST_CLIPS if min_test_clips is None else min_test_clips
    n = int(evaluation.get("n") or 0)
    checks: dict[str, bool] = {}
    reasons: list[str] = []
    if evaluation.get("error"):
        return {"promote": False, "checks": {}, "reasons": [f"the evaluation failed: {evaluation['error']}"]}
    if not auto_promote:
        reasons.append("config.training.auto_promote is off: a manager promotes")
    checks["enough_test_clips"] = n >= min_test_clips
    reasons.append(f"the test split has {n} clips, {'at least' if checks['enough_test_clips'] else 'fewer than'}"
                   f" {min_test_clips}")
    reference = evaluation.get("reference", "active")
    if "candidate" in evaluation and reference in evaluation and "paired_gain" in evaluation:
        cand, ref = evaluation["candidate"]["f"], evaluation[reference]["f"]
        gain = cand - ref
        checks["margin_met"] = gain >= margin - 1e-12
        reasons.append(f"candidate F {cand:.3f} vs {reference} F {ref:.3f}: gain {gain:+.3f} "
                       f"{'meets' if checks['margin_met'] else 'is below'} the margin {margin:.3f}")
        lower = evaluation["paired_gain"]["ci"][0]
        checks["gain_lower_bound_above_zero"] = lower > 0
        reasons.append(f"paired bootstrap lower {CONFIDENCE:.0%} bound of the gain is {lower:+.3f}"
                       f"{' (above zero)' if lower > 0 else ' (not above zero)'}")
    else:
        checks["margin_met"] = checks["gain_lower_bound_above_zero"] = False
        reasons.append("no figures to compare (no test clips were scored)")
    promote = bool(auto_promote and all(checks.values()))
    return {"promote": promote, "checks": checks, "reasons": reasons}


# --- the run's evaluation ------------------------------------------------------------------------------------
def evaluate_run(run: TrainingRun, candidate: ModelVersion) -> dict:
    """Score the candidate, the active version and the base on the run snapshot's test split. Returns the
    stored evaluation (without "promotion"); n = 0 and nothing loaded when the split is empty."""
    from .vocabulary import project_vocabulary

    items = test_items(run)
    specs = _model_specs(candidate)
    evaluation: dict = {"split": "test", "n": len(items), "snapshot": run.snapshot_id,
                        "clips": [item["name"] for item in items], "level": PRIMARY_LEVEL,
                        "resamples": RESAMPLES, "seed": SEED, "confidence": CONFIDENCE,
                        "models": {name: {"version": s["version"], "base": s["base"], "adapter": s["adapter"]}
                                   for name, s in specs.items()}}
    folder = wheel_dir()
    wheel = None
    if folder:
        from ml.metrics import load_wheel

        wheel = load_wheel(folder)
        evaluation["wheel"] = {"level": WHEEL_LEVEL}
    else:
        evaluation["wheel"] = {"skipped": "no emotion-wheel folder configured (settings.WHEEL_DIR or "
                                          "AFFECTLOOP_WHEEL_DIR; the project config has no such key)"}
    if not items:
        return evaluation
    train_config = run.config.get("train_config", {})
    predicted = score_models(specs, items, num_frames=int(train_config.get("num_frames", 8)),
                             max_new_tokens=int(train_config.get("max_new_tokens", 48)),
                             batch_size=int(train_config.get("batch_size", 8)))
    gold = {item["name"]: item["labels"] for item in items}
    evaluation.update(figures(gold, predicted, project_vocabulary(run.project), wheel))
    evaluation["per_clip"] = [{"clip": name, "gold": gold[name], **{m: predicted[m][name] for m in predicted}}
                              for name in gold]
    return evaluation


def evaluate_candidate(run: TrainingRun, candidate: ModelVersion) -> dict:
    """Evaluate (an error is recorded, never raised: the training itself succeeded), decide, and store the
    result in candidate.metrics["evaluation"] with "promotion": {"eligible", "promoted": False, "reasons",
    ...}. Returns the evaluation; `promote_if_eligible` acts on it once the run is recorded as succeeded."""
    try:
        evaluation = evaluate_run(run, candidate)
    except Exception as exc:  # the run trained; a failed evaluation only blocks auto-promotion
        log.exception("evaluation of training run %s failed", run.pk)
        message = " ".join(str(exc).split())
        for root, shown in ((settings.MEDIA_ROOT, "<media>"), (settings.MODEL_DIR, "<models>")):
            message = message.replace(str(root), shown)  # no server paths in what managers see
        evaluation = {"split": "test", "n": 0, "error": f"{type(exc).__name__}: {message}"[:2000]}
    training = project_config(run.project).training
    decision = decide(evaluation, auto_promote=training.auto_promote, margin=training.promote_margin,
                      min_test_clips=training.min_test_clips)
    evaluation["promotion"] = {"auto_promote": training.auto_promote, "margin": training.promote_margin,
                               "min_test_clips": training.min_test_clips, "eligible": decision["promote"],
                               "promoted": False, "checks": decision["checks"], "reasons": decision["reasons"]}
    _store(candidate, evaluation)
    return evaluation


def promote_if_eligible(candidate: ModelVersion, evaluation: dict) -> bool:
    """Promote the candidate through registry.promote (audited there) when the stored decision says so;
    records the outcome in candidate.metrics["evaluation"]["promotion"]. True when it was promoted."""
    promotion = evaluation["promotion"]
    if not promotion["eligible"]:
        return False
    candidate.refresh_from_db()
    if candidate.status == ModelVersion.Status.ACTIVE:
        promotion["reasons"].append(f"{candidate.name} is already active")
    else:
        try:
            registry.promote(candidate, actor=None)
            promotion["promoted"] = True
            promotion["reasons"].append("all three held: promoted automatically")
        except registry.RegistryError as exc:
            promotion["reasons"].append(f"promotion failed: {exc}")
    _store(candidate, evaluation)
    return promotion["promoted"]


def _store(candidate: ModelVersion, evaluation: dict) -> None:
    candidate.refresh_from_db(fields=["metrics"])
    metrics = {**candidate.metrics, "evaluation": evaluation}
    if isinstance(metrics.get("eval"), dict) and "test" in metrics["eval"]:  # training's copy beside the run's
        metrics["eval"] = {**metrics["eval"], "test": evaluation}
    ModelVersion.objects.filter(pk=candidate.pk).update(metrics=metrics)
    candidate.metrics = metrics
