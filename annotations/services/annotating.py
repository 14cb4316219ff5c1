"""An annotator's work on one clip: the draft (saved on the server as they go) and the submit.

Every write names the version it was based on; a write based on an older version raises Conflict with the
stored one, so two tabs never overwrite each other silently. A submit with an idempotency key already
applied returns the stored result instead of applying it again. Each submitted version is kept in the
append-only AnnotationRevision history; a draft keeps only its latest state.

Stored labels: [{"term": word as chosen, "source": "model" | "human", "note": str,
"evidence": ["face" | "voice" | "words", ...]}]; the vocabulary resolves the canonical term when it is read.
The server decides `source` (label_sources) and bounds the lead time (_lead): both measure the work and
how much the model's suggestions are taken, so neither may rest on what a client says.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .. import selectors
from ..models import Annotation, AnnotationRevision, Clip, ClipLease, Prediction, Review
from ..project_config import project_config
from . import audit, clip_index, queue, reviews, vocabulary

EVIDENCE = ("face", "voice", "words")
MAX_LABELS, MAX_TERM, MAX_NOTE = 30, 64, 1000
MAX_LEAD_STEP = 15 * 60.0  # seconds of focus one save may add: a client cannot claim hours in one request


class AnnotationError(ValueError):
    """Bad input: safe to show."""


class LeaseLost(AnnotationError):
    """The writer no longer holds a place on the clip and none is free: the draft is kept, nothing written."""


class Conflict(Exception):
    """The write was based on an older version than the stored one."""

    def __init__(self, annotation: Annotation, message: str = "This annotation changed since you loaded it."):
        super().__init__(message)
        self.annotation = annotation


def clean_labels(raw) -> list[dict]:
    """Validate and normalise labels from a client. Duplicates (by normalised word) keep the first."""
    from ml.vocabulary import normalise

    if not isinstance(raw, list):
        raise AnnotationError("labels must be a list")
    if len(raw) > MAX_LABELS:
        raise AnnotationError(f"at most {MAX_LABELS} labels")
    out, seen = [], set()
    for i, item in enumerate(raw, 1):
        if isinstance(item, str):
            item = {"term": item}
        if not isinstance(item, dict):
            raise AnnotationError(f"label {i} must be an object with a term")
        term = item.get("term")
        if not isinstance(term, str) or not normalise(term):
            raise AnnotationError(f"label {i} has no term")
        term = " ".join(term.split())
        if len(term) > MAX_TERM:
            raise AnnotationError(f"label {i}: a term is at most {MAX_TERM} characters")
        note = item.get("note") or ""
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise AnnotationError(f"label {i}: a note is text of at most {MAX_NOTE} characters")
        evidence = item.get("evidence") or []
        if not isinstance(evidence, list) or any(e not in EVIDENCE for e in evidence):
            raise AnnotationError(f"label {i}: evidence is a list of {', '.join(EVIDENCE)}")
        key = normalise(term)
        if key in seen:
            continue
        seen.add(key)
        # A client's "source" is ignored: the server derives it (label_sources).
        out.append({"term": term, "source": "human", "note": note.strip(),
                    "evidence": [e for e in EVIDENCE if e in evidence]})
    return out


def suggestion_mode(clip: Clip) -> str:
    """preselect, show or hide: the project's setting, except that test-split clips are always blind, so
    the model's measured quality is not anchored by its own output."""
    config = project_config(clip.project)
    if selectors.clip_split(clip, config) == "test":
        return "hide"
    return config.annotation.suggestions


def fused_labels(clip: Clip) -> list[dict]:
    fused = (Prediction.objects.filter(clip=clip, backend="fused").order_by("-created_at", "-id").first())
    if fused is None:
        return []
    return [{"term": lab["term"], "source": "model", "note": "", "evidence": []}
            for lab in fused.labels if isinstance(lab, dict) and lab.get("term")]


def label_sources(clip: Clip, labels: list[dict]) -> list[dict]:
    """The labels with `source` set by the server: "model" for a term (or its canonical term in the project
    vocabulary) among the clip's fused suggestions that the annotator is shown, "human" otherwise; blind
    ("hide") clips show none, so all their labels are human."""
    from ml.vocabulary import normalise

    shown = fused_labels(clip) if suggestion_mode(clip) != "hide" else []
    vocab = vocabulary.project_vocabulary(clip.project) if shown else None

    def key(term):
        return normalise(vocab.canonical(term) or term)

    suggested = {key(lab["term"]) for lab in shown}
    return [{**lab, "source": "model" if suggested and key(lab["term"]) in suggested else "human"}
            for lab in labels]


def start(user, clip: Clip) -> Annotation:
    """The user's annotation of the clip: their existing one, or a new draft (from the fused labels when the
    project preselects suggestions; a draft is never submitted without a human action)."""
    annotation = Annotation.objects.filter(clip=clip, annotator=user).first()
    if annotation is not None:
        return annotation
    labels = fused_labels(clip) if suggestion_mode(clip) == "preselect" else []
    with transaction.atomic():
        annotation, created = Annotation.objects.get_or_create(clip=clip, annotator=user,
                                                               defaults={"labels": labels})
        if created:
            reviews.refresh_label_state(clip)
    return annotation


def _locked(annotation: Annotation) -> Annotation:
    """The annotation, and first its clip, locked: submits, reviews and claims on one clip count its
    submissions one at a time (two concurrent submits must not both see "one of two")."""
    Clip.objects.select_for_update().filter(pk=annotation.clip_id).first()
    return Annotation.objects.select_for_update().select_related("clip__project").get(pk=annotation.pk)


def _hold_place(current: Annotation) -> ClipLease:
    try:
        return queue.ensure_lease(current.annotator, current.clip)
    except queue.QueueError as exc:
        raise LeaseLost(str(exc)) from None


def _stretch_start(current: Annotation, lease: ClipLease) -> datetime:
    """Where the work this save reports began, as the server saw it: the latest of the annotation's last write
    (its creation at first), the writer's claim on the clip, and a reviewer's return of the draft."""
    returned = (Review.objects.filter(annotation=current, decision=Review.Decision.REJECT)
                .order_by("-created_at").values_list("created_at", flat=True).first())
    return max(t for t in (current.updated_at, lease.acquired_at, returned) if t is not None)


def _lead(seconds, since: datetime) -> float:
    """Seconds of work one save adds. The client's figure counts only the time its page had focus, which the
    server cannot see, so it is kept; but it is capped by MAX_LEAD_STEP and by the wall time since `since`
    (the client reports the focus since its last save), so the sum never exceeds the time the annotator
    really had the clip, whatever a client claims. Time without a claim (an expired lease) counts as none."""
    try:
        value = float(seconds or 0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if not math.isfinite(value):
        return 0.0
    elapsed = max((timezone.now() - since).total_seconds(), 0.0)
    return min(max(value, 0.0), MAX_LEAD_STEP, elapsed)


def save_draft(annotation: Annotation, *, labels, base_version: int, lead_time=0.0) -> Annotation:
    """Autosave. Returns the stored annotation with its new version."""
    labels = clean_labels(labels)
    with transaction.atomic():
        current = _locked(annotation)
        if current.status != Annotation.Status.DRAFT:
            raise Conflict(current, "This annotation was already submitted.")
        if base_version != current.version:
            raise Conflict(current)
        lease = _hold_place(current)
        current.labels = label_sources(current.clip, labels)
        current.version += 1
        current.lead_time += _lead(lead_time, _stretch_start(current, lease))
        current.save(update_fields=["labels", "version", "lead_time", "updated_at"])
    return current


def submit(annotation: Annotation, *, labels, base_version: int, idempotency_key: str = "",
           lead_time=0.0) -> Annotation:
    """Submit the labels. Applied once per idempotency key; a stale base version raises Conflict."""
    labels = clean_labels(labels)
    if not labels:
        raise AnnotationError("Add at least one label before submitting.")
    key = (idempotency_key or "")[:64]
    with transaction.atomic():
        current = _locked(annotation)
        if key and current.last_idempotency_key == key:
            return current  # a retry of a submit that already landed
        if current.status == Annotation.Status.SUBMITTED:
            raise Conflict(current, "This annotation was already submitted.")
        if base_version != current.version:
            raise Conflict(current)
        lease = _hold_place(current)
        labels = label_sources(current.clip, labels)
        current.labels = labels
        current.status = Annotation.Status.SUBMITTED
        current.version += 1
        current.lead_time += _lead(lead_time, _stretch_start(current, lease))
        current.submitted_at = timezone.now()
        current.last_idempotency_key = key
        current.save()
        AnnotationRevision.objects.create(annotation=current, version=current.version, labels=labels,
                                          lead_time=current.lead_time)
        queue.release(current.annotator, current.clip, queue.ANNOTATE)
        audit.record("annotation.submitted", current, actor=current.annotator, project=current.clip.project,
                     changes={"clip": current.clip_id, "version": current.version,
                              **audit.labels_summary(labels)})
        reviews.annotation_submitted(current)
        clip_index.index_clip(current.clip)
    return current


def history(clip: Clip) -> list[dict]:
    """The clip's append-only history, oldest first: every submitted version and every review."""
    events = [{"at": r.created_at, "kind": "submitted", "who": r.annotation.annotator.get_username(),
               "version": r.version, "labels": r.labels, "annotation": r.annotation_id}
              for r in AnnotationRevision.objects.filter(annotation__clip=clip).select_related("annotation__annotator")]
    events += [{"at": r.created_at, "kind": r.decision, "who": r.reviewer.get_username(),
                "version": r.annotation_version, "labels": r.fixed_labels, "reason": r.reason,
                "automatic": r.automatic, "annotation": r.annotation_id}
               for r in Review.objects.filter(annotation__clip=clip).select_related("reviewer")]
    return sorted(events, key=lambda e: e["at"])
