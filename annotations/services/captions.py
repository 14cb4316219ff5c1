"""Human-centric captions: auxiliary training data for scarce labels (DESIGN.md; issue 10 item 3).

A GPU worker (task affectloop.gpu.caption_clips) asks the project's pre-labeling InternVL model, its active
registry version, to describe the person in clips that are not verified (face, expression, gaze, posture,
voice, words) with the caption prompt (ml.prompts.INTERNVL_CAPTION_PROMPT_VERSION). Each caption is stored in
the Caption table (never as a Prediction), one per clip, model version and prompt version, so a repeated task
adds nothing.

A caption is *kept* only when the emotion terms extracted from it (ml.labels, canonical vocabulary terms)
agree with the clip's fused pre-labels: Jaccard overlap >= config.training.caption_agreement. A clip without
fused pre-labels, or a caption without any vocabulary term, is not kept.

A training run mixes kept captions in at config.training.caption_ratio (services.training): `write_jsonl`
writes captions.jsonl ({"video", "transcript", "caption"}) from the kept captions of clips that are neither
in the run snapshot's val/test splits nor stored in a val/test split themselves, so evaluation clips never
leak into training.

Torch-free at import: the generation (`generate`) imports the InternVL backend inside, on workers only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from django.db import IntegrityError, transaction

from ml.prompts import INTERNVL_CAPTION_PROMPT_VERSION

from .. import dispatch, selectors
from ..models import Caption, Clip, DatasetSnapshot, Prediction, Project, SnapshotItem
from ..project_config import project_config

log = logging.getLogger(__name__)

BACKEND = "internvl"
PROMPT_VERSION = INTERNVL_CAPTION_PROMPT_VERSION
MAX_NEW_TOKENS = 96  # one or two sentences
EVALUATION_SPLITS = ("val", "test")
FILE_NAME = "captions.jsonl"


# --- agreement ------------------------------------------------------------------------------------------
def extract_terms(text: str, vocabulary) -> list[str]:
    """The canonical vocabulary terms a caption names (negations dropped by ml.labels); unknown words out."""
    from ml.labels import analyse

    parsed = analyse(text, vocabulary, expect_json=False)
    return [term for term in parsed.terms if term in vocabulary and not parsed.refusal]


def canonical_terms(terms: Iterable[str], vocabulary) -> list[str]:
    out: list[str] = []
    for term in terms:
        canonical = vocabulary.canonical(term) or term
        if canonical not in out:
            out.append(canonical)
    return out


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    a, b = set(a), set(b)
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def agreement(caption_terms: Sequence[str], fused_terms: Sequence[str], threshold: float) -> tuple[float, bool]:
    """(Jaccard, kept): kept when both sides name terms and the overlap reaches `threshold`."""
    score = jaccard(caption_terms, fused_terms)
    return score, bool(caption_terms) and bool(fused_terms) and score >= threshold


def fused_terms(clip: Clip, vocabulary) -> list[str]:
    """The clip's newest fused pre-labels, as canonical terms ([] when it has none)."""
    row = Prediction.objects.filter(clip=clip, backend="fused").order_by("-created_at", "-id").first()
    return canonical_terms((lab["term"] for lab in (row.labels if row else [])), vocabulary)


def store_caption(clip: Clip, text: str, *, model_version: str, model=None, prompt_version: str = PROMPT_VERSION,
                  vocabulary=None, threshold: float | None = None) -> Caption | None:
    """One Caption row with its extracted terms, agreement and kept flag; None when the clip already has a
    caption of this model and prompt version (a repeated task adds nothing)."""
    from .vocabulary import project_vocabulary

    vocabulary = vocabulary or project_vocabulary(clip.project)
    if threshold is None:
        threshold = project_config(clip.project).training.caption_agreement
    terms = extract_terms(text, vocabulary)
    fused = fused_terms(clip, vocabulary)
    score, kept = agreement(terms, fused, threshold)
    try:
        with transaction.atomic():
            return Caption.objects.create(clip=clip, text=text, model_version=model_version, model=model,
                                          prompt_version=prompt_version, labels=terms, fused_labels=fused,
                                          agreement=round(score, 6), kept=kept)
    except IntegrityError:
        return None


def reassess(project: Project) -> int:
    """Recompute every caption's agreement and kept flag of the project (after new fused pre-labels or a
    changed config.training.caption_agreement); returns how many changed."""
    from .vocabulary import project_vocabulary

    vocabulary = project_vocabulary(project)
    threshold = project_config(project).training.caption_agreement
    changed = 0
    for caption in Caption.objects.filter(clip__project=project).select_related("clip"):
        fused = fused_terms(caption.clip, vocabulary)
        score, kept = agreement(caption.labels, fused, threshold)
        if (caption.kept, caption.fused_labels) != (kept, fused) or caption.agreement != round(score, 6):
            Caption.objects.filter(pk=caption.pk).update(kept=kept, fused_labels=fused, agreement=round(score, 6))
            changed += 1
    return changed


# --- queue side -----------------------------------------------------------------------------------------
def captionable(clips):
    """The ready clips among `clips` that are not verified: those that still need humans (unlabelled,
    pre-labelled or in progress; never a submitted, reviewed or verified one)."""
    return selectors.needs_humans(clips.filter(status=Clip.Status.READY))


def wanted(project: Project) -> bool:
    """Whether the project's runs mix captions in (config.training.caption_ratio > 0)."""
    from ..project_config import ConfigError

    try:
        return project_config(project).training.caption_ratio > 0
    except ConfigError:
        return False


def enqueue_captions(project: Project, *, batch_size: int | None = None, limit: int = 5000) -> int:
    """Send the project's unverified, pre-labelled clips (with fused pre-labels) that lack a caption of the
    current model and prompt version to the GPU workers, in batches of config.prelabel.batch_size; returns
    how many were sent. Needs an active InternVL version; without one nothing is sent."""
    from . import prelabel

    run = next((r for r in prelabel.plan(project).runs if r.backend == BACKEND), None)
    if run is None:
        return 0
    have = Caption.objects.filter(model_version=run.version, prompt_version=PROMPT_VERSION).values("clip_id")
    # Only clips with fused pre-labels: a caption is kept by its agreement with them.
    fused = Prediction.objects.filter(backend="fused").values("clip_id")
    ids = list(captionable(project.clips.filter(pk__in=fused)).exclude(pk__in=have).order_by("id")
               .values_list("id", flat=True)[:limit])
    size = batch_size or project_config(project).prelabel.batch_size
    for start in range(0, len(ids), size):
        dispatch.caption_clips(ids[start:start + size])
    return len(ids)


# --- worker side ----------------------------------------------------------------------------------------
def generate(backend, clips: Sequence, *, max_new_tokens: int = MAX_NEW_TOKENS) -> list:
    """Captions of `clips` (ml.types.ClipInput) by a loaded InternVLBackend, under its active adapter: the
    caption prompt through the backend's own inputs and generate step (`predict(task=CAPTION)`). Returns
    ml.types.Prediction objects whose raw_text is the caption (their labels are meaningless here); a clip
    whose video failed has its error."""
    from ml.prompts import CAPTION

    return backend.predict(clips, task=CAPTION, max_new_tokens=max_new_tokens)


def caption_clips(clip_ids: list[int], *, backend=None) -> dict:
    """Caption the given clips that are ready, not verified and lack a caption of the project's active
    InternVL version with this prompt version; store, score agreement and keep. `backend`: an already loaded
    backend (tests); otherwise the worker's model cache loads the active version."""
    from ml.types import ClipInput

    from . import prelabel
    from .prelabel_run import model_cache, spec_for, user_safe
    from .vocabulary import project_vocabulary

    stats = {"stored": 0, "kept": 0, "skipped": 0, "errors": 0}
    clips = Clip.objects.filter(pk__in=clip_ids).select_related("project")
    by_project: dict[int, list[Clip]] = {}
    for clip in clips:
        by_project.setdefault(clip.project_id, []).append(clip)
    for project_clips in by_project.values():
        project = project_clips[0].project
        run = next((r for r in prelabel.plan(project).runs if r.backend == BACKEND), None)
        if run is None:
            stats["skipped"] += len(project_clips)
            continue
        eligible = set(captionable(Clip.objects.filter(pk__in=[c.pk for c in project_clips]))
                       .values_list("pk", flat=True))
        have = set(Caption.objects.filter(clip__in=project_clips, model_version=run.version,
                                          prompt_version=PROMPT_VERSION).values_list("clip_id", flat=True))
        todo = [c for c in project_clips if c.pk in eligible and c.pk not in have]
        stats["skipped"] += len(project_clips) - len(todo)
        if not todo:
            continue
        by_id = {str(c.pk): c for c in todo}
        inputs = [ClipInput(clip_id=str(c.pk), video_path=c.file.path, transcript=c.transcript) for c in todo]
        try:
            if backend is not None:
                generated = generate(backend, inputs)
            else:
                cache = model_cache()
                with cache.lock:
                    generated = generate(cache.get(spec_for(run)), inputs)
        except Exception as exc:  # logged; captions are optional data, retried next time
            log.exception("captioning with %s failed for clips %s", run.model.name, list(by_id))
            stats["errors"] += len(todo)
            stats.setdefault("error", user_safe(f"{type(exc).__name__}: {exc}")[:500])
            continue
        vocabulary = project_vocabulary(project)
        threshold = project_config(project).training.caption_agreement
        for pred in generated:
            text = " ".join((pred.raw_text or "").split())
            if pred.error or not text:
                stats["errors"] += 1
                continue
            row = store_caption(by_id[pred.clip_id], text, model_version=run.version, model=run.model,
                                vocabulary=vocabulary, threshold=threshold)
            if row is None:
                stats["skipped"] += 1
                continue
            stats["stored"] += 1
            stats["kept"] += row.kept
    return stats


# --- training data --------------------------------------------------------------------------------------
def training_captions(snapshot: DatasetSnapshot):
    """Kept captions of the snapshot's project usable for training: not of a clip in the snapshot's val or
    test split, nor of a clip stored in a val/test split (it would land there in a later snapshot)."""
    held_out = SnapshotItem.objects.filter(snapshot=snapshot, split__in=EVALUATION_SPLITS).values("clip_id")
    return (Caption.objects.filter(clip__project_id=snapshot.project_id, kept=True)
            .exclude(clip_id__in=held_out).exclude(clip__split__in=EVALUATION_SPLITS)
            .exclude(text=""))


def write_jsonl(snapshot: DatasetSnapshot, folder, *, media_root=None) -> tuple[Path, int]:
    """captions.jsonl in `folder` in ml.training.data's caption format ({"video": absolute path,
    "transcript", "caption"}), one line per clip (its newest kept caption), sorted by clip name: the same
    captions write the same bytes. Returns the path and the number of lines."""
    from .snapshots import media_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    newest: dict[int, tuple] = {}
    rows = training_captions(snapshot).order_by("clip_id", "-created_at", "-id").values_list(
        "clip_id", "clip__name", "clip__file", "clip__transcript", "text")
    for clip_id, name, file_name, transcript, text in rows.iterator(chunk_size=2000):
        newest.setdefault(clip_id, (name, clip_id, file_name, transcript, text))
    path = folder / FILE_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for _, _, file_name, transcript, text in sorted(newest.values(), key=lambda r: (r[0], r[1])):
            line = {"video": media_path(file_name, media_root), "transcript": transcript, "caption": text}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path, len(newest)
