"""Reviews and the clip label state they decide. The verified rule itself is `selectors.verified_clips`."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .. import selectors
from ..models import Annotation, Clip, Membership, Review
from ..project_config import project_config
from . import audit
from .queue import review_request_open


class ReviewError(ValueError):
    pass


def review(annotation: Annotation, *, reviewer, decision: str, reason: str = "", fixed_labels: list | None = None,
           automatic: bool = False, version: int | None = None) -> Review:
    """Record a verdict on an annotation's current version and re-derive the clip's label state."""
    if decision not in Review.Decision.values:
        raise ReviewError(f"unknown decision {decision!r}")
    if decision == Review.Decision.REJECT and not reason.strip():
        raise ReviewError("a rejection needs a reason")
    if decision == Review.Decision.FIX and not fixed_labels:
        raise ReviewError("a fix needs the corrected labels")
    with transaction.atomic():
        # Lock the clip, then the annotation, and judge what is stored now: a concurrent reject or resubmit
        # must not be accepted by a verdict given on what the reviewer saw earlier.
        Clip.objects.select_for_update().filter(pk=annotation.clip_id).first()
        annotation = Annotation.objects.select_for_update().select_related("clip__project").get(pk=annotation.pk)
        if annotation.status != Annotation.Status.SUBMITTED:
            raise ReviewError("This annotation is no longer waiting for review.")
        if version is not None and annotation.version != version:
            raise ReviewError("The annotation changed since you opened it; look again.")
        verdict = Review.objects.create(annotation=annotation, reviewer=reviewer, decision=decision, reason=reason,
                                        fixed_labels=fixed_labels if decision == Review.Decision.FIX else None,
                                        annotation_version=annotation.version, automatic=automatic)
        if decision == Review.Decision.REJECT:
            # Back to its author as a draft, one version on: their next claim brings it up first, with the
            # reason at the top of the clip page.
            Annotation.objects.filter(pk=annotation.pk).update(status=Annotation.Status.DRAFT,
                                                               version=annotation.version + 1, submitted_at=None)
            annotation.refresh_from_db()
        refresh_label_state(annotation.clip)
        from . import clip_index

        clip_index.index_clip(annotation.clip)
        audit.record("review.recorded", verdict, actor=reviewer, project=annotation.clip.project,
                     changes={"annotation": annotation.pk, "clip": annotation.clip_id, "decision": decision,
                              "automatic": automatic, **audit.text_summary(reason, "reason"),
                              **(audit.labels_summary(verdict.fixed_labels, "fixed_labels")
                                 if verdict.fixed_labels is not None else {})})
    return verdict


def refresh_label_state(clip: Clip) -> str:
    """A clip's label state from its reviews (the verified rule), its submissions against the overlap, and
    its drafts; machine predictions only ever move it from unlabeled to prelabeled."""
    overlap = project_config(clip.project).annotation.overlap
    if selectors.verified_clips(Clip.objects.filter(pk=clip.pk)).exists():
        state = Clip.LabelState.VERIFIED
    elif (submitted := clip.annotations.filter(status=Annotation.Status.SUBMITTED).count()) >= overlap or (
            submitted and review_request_open(clip)):
        state = Clip.LabelState.SUBMITTED
    elif clip.annotations.exists():
        state = Clip.LabelState.IN_PROGRESS
    elif clip.predictions.filter(backend="fused").exists():
        state = Clip.LabelState.PRELABELED
    else:
        state = Clip.LabelState.UNLABELED
    verified_at = (clip.verified_at or timezone.now()) if state == Clip.LabelState.VERIFIED else None
    Clip.objects.filter(pk=clip.pk).update(label_state=state, verified_at=verified_at)
    clip.label_state, clip.verified_at = state, verified_at
    return state


def annotation_submitted(annotation: Annotation) -> Review | None:
    """After a submit: a *trusted* annotator's work is accepted automatically (a review by the annotator,
    marked automatic) once the clip's overlap is met; otherwise it waits for a reviewer."""
    clip = annotation.clip
    trusted = Membership.objects.filter(project=clip.project, user=annotation.annotator, trusted=True).exists()
    overlap = project_config(clip.project).annotation.overlap
    submitted = clip.annotations.filter(status=Annotation.Status.SUBMITTED).count()
    if trusted and submitted >= overlap:
        return review(annotation, reviewer=annotation.annotator, decision=Review.Decision.ACCEPT,
                      reason="trusted annotator", automatic=True)
    refresh_label_state(clip)
    return None
