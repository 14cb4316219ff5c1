"""The work queue: who gets which clip next, and the leases that hold a claim while someone works.

A clip is offered for annotation while fewer than `overlap` people have submitted it or hold it: at most
`overlap - submitted` annotate leases are live at once, never two for one person. Review leases are
counted apart (one reviewer per clip at a time) and never block annotators. Leases expire unless the clip
page's heartbeat renews them; an expired lease counts as none.

Concurrency: every lease is written while holding the clip's row lock. On PostgreSQL the candidates are
locked with FOR UPDATE SKIP LOCKED, so concurrent claims pass over each other's clips instead of waiting, and
the count is taken again after the lock (a statement started before another claim committed does not see
its lease). On SQLite the transaction takes the write lock at BEGIN (IMMEDIATE), which serialises claims.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import selectors
from ..models import (
    ROLE_RANK,
    Annotation,
    Clip,
    ClipLease,
    ClipSkip,
    GoldAnswer,
    Membership,
    Project,
    Review,
    Role,
)
from ..project_config import project_config
from . import audit

ANNOTATE, REVIEW = ClipLease.Kind.ANNOTATE, ClipLease.Kind.REVIEW
# Clips locked per claim attempt. SKIP LOCKED already passes over the ones other claims hold, so a few are
# enough; each one locked is held until commit and built into a model object (measured: 16 cost ~7 ms).
CANDIDATES = 4
MAX_SKIP_REASON = 500


class QueueError(ValueError):
    """Safe to show to the user."""


def lease_length(project: Project) -> timedelta:
    return timedelta(minutes=project_config(project).annotation.lease_minutes)


def live(leases: QuerySet[ClipLease]) -> QuerySet[ClipLease]:
    return leases.filter(expires_at__gt=timezone.now())


def _count(qs, field="clip"):
    return Coalesce(Subquery(qs.values(field).annotate(n=Count("*")).values("n")[:1],
                             output_field=IntegerField()), Value(0))


def _submitted():
    return _count(Annotation.objects.filter(clip=OuterRef("pk"), status=Annotation.Status.SUBMITTED))


def _held_by_others(user, kind):
    return _count(live(ClipLease.objects.filter(clip=OuterRef("pk"), kind=kind)).exclude(user=user))


def _returned_to_others():
    """Drafts of other annotators that a reviewer sent back (a draft with a review was rejected): their
    authors keep their place until they submit again. An author who holds a live lease is counted by the
    lease already, not twice."""
    member = Membership.objects.filter(project=OuterRef("clip__project"), user=OuterRef("annotator"))
    return (Annotation.objects.filter(clip=OuterRef("pk"), status=Annotation.Status.DRAFT)
            .filter(Exists(Review.objects.filter(annotation=OuterRef("pk"))))
            .filter(Exists(member) | Q(annotator__is_superuser=True))  # someone who left holds no place
            .exclude(Exists(live(ClipLease.objects.filter(clip=OuterRef("clip"), user=OuterRef("annotator"),
                                                           kind=ANNOTATE)))))


def held(user, project: Project, kind: str = ANNOTATE) -> ClipLease | None:
    """The user's live lease of this kind in the project, if any (a reload resumes it)."""
    return (live(ClipLease.objects.filter(user=user, kind=kind, clip__project=project))
            .select_related("clip").order_by("-acquired_at").first())


def annotate_candidates(user, project: Project) -> QuerySet[Clip]:
    """Clips this user may take for annotation, in queue order (priority DESC NULLS LAST, then id)."""
    overlap = project_config(project).annotation.overlap
    mine = Annotation.objects.filter(clip=OuterRef("pk"), annotator=user)
    return (selectors.needs_humans(project.clips.filter(status=Clip.Status.READY))
            .exclude(Exists(mine.filter(status=Annotation.Status.SUBMITTED)))
            .exclude(Exists(ClipSkip.objects.filter(clip=OuterRef("pk"), user=user)))
            .annotate(n_submitted=_submitted(), n_held=_held_by_others(user, ANNOTATE),
                      n_returned=_count(_returned_to_others().exclude(annotator=user)))
            .filter(n_submitted__lt=overlap - F("n_held") - F("n_returned"))
            .order_by(F("priority").desc(nulls_last=True), "id"))


def review_request_open(clip: Clip) -> bool:
    """A manager sent the clip to review and no human verdict has been given since."""
    return clip.review_requested_at is not None and not Review.objects.filter(
        annotation__clip=clip, automatic=False, created_at__gte=clip.review_requested_at).exists()


def review_candidates(user, project: Project) -> QuerySet[Clip]:
    """Clips that no other reviewer holds and that have a submission, not the reviewer's own, waiting for this
    reviewer's verdict: either all submissions are in and one waits for a verdict on its current version, or
    a manager sent the clip to review (before the overlap was met, or for a second look at verified work)
    and no human verdict has been given since."""
    by_others = Annotation.objects.filter(clip=OuterRef("pk"), status=Annotation.Status.SUBMITTED).exclude(
        annotator=user)
    unjudged = by_others.exclude(Exists(Review.objects.filter(annotation=OuterRef("pk"),
                                                              annotation_version=OuterRef("version"))))
    not_by_me = by_others.exclude(Exists(Review.objects.filter(
        annotation=OuterRef("pk"), annotation_version=OuterRef("version"), reviewer=user)))
    human_since = Review.objects.filter(annotation__clip=OuterRef("pk"), automatic=False,
                                        created_at__gte=OuterRef("review_requested_at"))
    waiting = Q(label_state=Clip.LabelState.SUBMITTED) & Exists(unjudged)
    requested = (Q(review_requested_at__isnull=False,
                   label_state__in=[Clip.LabelState.SUBMITTED, Clip.LabelState.VERIFIED])
                 & ~Exists(human_since) & Exists(not_by_me))
    return (project.clips.filter(status=Clip.Status.READY).filter(waiting | requested)
            .annotate(n_held=_held_by_others(user, REVIEW)).filter(n_held=0)
            .order_by(F("priority").desc(nulls_last=True), "id"))


def send_to_review(clips: QuerySet[Clip], *, actor) -> dict[str, int]:
    """Managers: put clips in front of reviewers now. A clip with submissions but short of its overlap goes
    to review with what it has (leases still held stay, so nobody's work in progress is lost); a verified
    clip gets a human second look (e.g. a trusted annotator's automatic accept). Clips without a submission
    have nothing to review and are counted apart."""
    from .reviews import refresh_label_state

    sent = without = 0
    now = timezone.now()
    with transaction.atomic():
        for clip in _wait_lock(clips.filter(status=Clip.Status.READY).select_related("project")).order_by("pk"):
            if not clip.annotations.filter(status=Annotation.Status.SUBMITTED).exists():
                without += 1
                continue
            Clip.objects.filter(pk=clip.pk).update(review_requested_at=now)
            clip.review_requested_at = now
            refresh_label_state(clip)
            audit.record("clip.review_requested", clip, actor=actor, project=clip.project,
                         changes={"label_state": clip.label_state})
            sent += 1
    return {"sent": sent, "without_submissions": without}


_RECOUNT = """
SELECT (SELECT COUNT(*) FROM annotations_annotation WHERE clip_id = %s AND status = 'submitted'),
       (SELECT COUNT(*) FROM annotations_cliplease
         WHERE clip_id = %s AND kind = 'annotate' AND expires_at > %s AND user_id <> %s),
       (SELECT COUNT(*) FROM annotations_annotation WHERE clip_id = %s AND annotator_id = %s
         AND status = 'submitted'),
       (SELECT COUNT(*) FROM annotations_clipskip WHERE clip_id = %s AND user_id = %s),
       (SELECT COUNT(*) FROM annotations_annotation a WHERE a.clip_id = %s AND a.annotator_id <> %s
         AND a.status = 'draft' AND EXISTS (SELECT 1 FROM annotations_review r WHERE r.annotation_id = a.id)
         AND NOT EXISTS (SELECT 1 FROM annotations_cliplease l WHERE l.clip_id = a.clip_id
                         AND l.user_id = a.annotator_id AND l.kind = 'annotate' AND l.expires_at > %s)
         AND (EXISTS (SELECT 1 FROM annotations_membership m JOIN annotations_clip c ON c.project_id = m.project_id
                      WHERE c.id = a.clip_id AND m.user_id = a.annotator_id)
              OR EXISTS (SELECT 1 FROM auth_user u WHERE u.id = a.annotator_id AND u.is_superuser)))
"""


def _still_open(clip: Clip, user, kind: str) -> bool:
    """Re-check one clip under its row lock, in a fresh statement: the authoritative count. The annotate
    check is one plain statement (the same rules as annotate_candidates, for one clip): building the whole
    candidates query again cost more than the database work."""
    if kind == REVIEW:
        return review_candidates(user, clip.project).filter(pk=clip.pk).exists()
    if clip.status != Clip.Status.READY or clip.label_state not in selectors.NEEDS_HUMANS:
        return False
    overlap = project_config(clip.project).annotation.overlap
    with connection.cursor() as cursor:
        now = connection.ops.adapt_datetimefield_value(timezone.now())  # as the backend stores datetimes
        cursor.execute(_RECOUNT, [clip.pk, clip.pk, now, user.pk, clip.pk, user.pk, clip.pk, user.pk,
                                  clip.pk, user.pk, now])
        submitted, held_by_others, mine, skipped, returned = cursor.fetchone()
    return not mine and not skipped and submitted + held_by_others + returned < overlap


def _lock(clips: QuerySet[Clip]) -> QuerySet[Clip]:
    if connection.features.has_select_for_update_skip_locked:
        return clips.select_for_update(skip_locked=True, of=("self",))
    return clips  # SQLite: the IMMEDIATE transaction already holds the database's write lock


def _wait_lock(clips: QuerySet[Clip]) -> QuerySet[Clip]:
    return clips.select_for_update(of=("self",)) if connection.features.has_select_for_update else clips


def _locked_candidates(candidates: QuerySet[Clip], wait: bool):
    """The first few candidates, locked. Waiting, lock one row at a time further down the queue: locking a
    block at once would make every other claimer skip, then wait on, the whole block."""
    if not wait:
        yield from _lock(candidates.select_related("project"))[:CANDIDATES]
        return
    for pk in list(candidates.values_list("pk", flat=True)[:CANDIDATES * 16]):
        clip = _wait_lock(Clip.objects.filter(pk=pk).select_related("project")).first()
        if clip is not None:
            yield clip


def _take(clip: Clip, user, kind: str) -> ClipLease:
    now = timezone.now()
    lease, _ = ClipLease.objects.update_or_create(
        clip=clip, user=user, kind=kind,
        defaults={"acquired_at": now, "expires_at": now + lease_length(clip.project)})
    lease.clip = clip
    return lease


def next_clip(user, project: Project, kind: str = ANNOTATE) -> ClipLease | None:
    """Claim the next clip (or resume the one already held). None when the queue has nothing for this user."""
    if kind not in (ANNOTATE, REVIEW):
        raise QueueError(f"unknown queue {kind!r}")
    lease, contended = _next_clip_once(user, project, kind, wait=False)
    if lease is None and contended:
        # SKIP LOCKED passed over clips other claims held for a moment, and nothing else was open: wait for
        # those locks (each claim holds one for milliseconds) rather than report an empty queue.
        lease, _ = _next_clip_once(user, project, kind, wait=True)
    return lease


def _next_clip_once(user, project: Project, kind: str, *, wait: bool) -> tuple[ClipLease | None, bool]:
    """(lease, contended): contended when there were candidates but others held them all locked."""
    # Waiting on locks means the first few are full once we get them: look further down the queue.
    with transaction.atomic():
        current = held(user, project, kind)
        if current is not None:
            return renew(current), False
        candidates = annotate_candidates(user, project) if kind == ANNOTATE else review_candidates(user, project)
        if kind == ANNOTATE:
            from . import gold  # gold imports this module

            # A gold item served and put down comes back first (services.gold), then the user's own drafts.
            resumed = gold.resume(user, project)
            if resumed is not None:
                return resumed, False
        if kind == ANNOTATE and Annotation.objects.filter(annotator=user, status=Annotation.Status.DRAFT,
                                                          clip__project=project).exists():
            # Work this user started and put down (an expired lease, a rejected submit) comes first.
            own = candidates.filter(annotations__annotator=user, annotations__status=Annotation.Status.DRAFT)
            for clip in _locked_candidates(own, wait):
                if _still_open(clip, user, kind):
                    return _take(clip, user, kind), False
        if kind == ANNOTATE and gold.due(user, project) and candidates.exists():
            # Mixed in at config.gold.rate of the items served, only while the queue has real work too.
            served = gold.serve(user, project)
            if served is not None:
                return served, False
        for clip in _locked_candidates(candidates, wait):
            if _still_open(clip, user, kind):
                return _take(clip, user, kind), False
        contended = connection.features.has_select_for_update_skip_locked and candidates.exists()
    return None, contended


def claim(user, clip: Clip, kind: str = ANNOTATE) -> ClipLease:
    """Claim a given clip (opening it from "my recent clips" or a link), if the queue rules allow it."""
    from . import gold  # gold imports this module

    with transaction.atomic():
        if kind == ANNOTATE and gold.has_open(user, clip):
            # A gold item is answered through services.gold, never as an annotation of the clip.
            raise QueueError("This clip is not open to you right now: others hold it, or it is done.")
        current = live(ClipLease.objects.filter(user=user, clip=clip, kind=kind)).first()
        if current is not None:
            return renew(current)
        # Wait for this one row (another claim holds it for milliseconds) rather than skip it.
        locked = _wait_lock(Clip.objects.filter(pk=clip.pk)).select_related("project").first()
        if locked is None or not _still_open(locked, user, kind):
            raise QueueError("This clip is not open to you right now: others hold it, or it is done.")
        return _take(locked, user, kind)


def ensure_lease(user, clip: Clip) -> ClipLease:
    """A write to a draft needs the writer's place on the clip: their live lease, or a new claim where the
    rules still allow one. QueueError when someone else has the place now (the tab slept, a manager
    released it): the draft is kept, and the page goes read-only."""
    current = live(ClipLease.objects.filter(user=user, clip=clip, kind=ANNOTATE)).first()
    if current is not None:
        return current
    ClipLease.objects.filter(user=user, clip=clip, kind=ANNOTATE).delete()  # an expired one
    return claim(user, clip, ANNOTATE)


def renew(lease: ClipLease) -> ClipLease:
    """The heartbeat: push the expiry out again. An expired lease is renewed only if nobody took its place."""
    now = timezone.now()
    expires = now + lease_length(lease.clip.project)
    updated = ClipLease.objects.filter(pk=lease.pk).update(expires_at=expires)
    if not updated:
        raise QueueError("This lease was released; open the clip again.")
    lease.expires_at = expires
    return lease


def heartbeat(user, clip: Clip, kind: str = ANNOTATE) -> ClipLease:
    lease = ClipLease.objects.filter(user=user, clip=clip, kind=kind).select_related("clip__project").first()
    if lease is None:
        raise QueueError("You no longer hold this clip: a manager released it.")
    if lease.expires_at <= timezone.now():
        # Expired while the tab slept: take it again if the rules still allow it.
        lease.delete()
        return claim(user, clip, kind)
    return renew(lease)


def holders(clip_ids) -> dict[int, list[tuple[str, str]]]:
    """clip id → [(username, kind)] of its live leases, for a page of clips (one query)."""
    out: dict[int, list[tuple[str, str]]] = {}
    for clip_id, username, kind in live(ClipLease.objects.filter(clip_id__in=list(clip_ids))).order_by(
            "clip_id", "kind", "pk").values_list("clip_id", "user__username", "kind"):
        out.setdefault(clip_id, []).append((username, kind))
    return out


def release(user, clip: Clip, kind: str = ANNOTATE) -> None:
    ClipLease.objects.filter(user=user, clip=clip, kind=kind).delete()


def release_leases(clips: QuerySet[Clip], *, actor) -> int:
    """Managers: free every lease on these clips (someone left for lunch with the tab open)."""
    return release_selected(ClipLease.objects.filter(clip__in=clips), actor=actor)


def release_lease(lease: ClipLease, *, actor) -> bool:
    """Managers: free one lease (its holder's draft stays theirs). False when it had ended meanwhile."""
    with transaction.atomic():
        if not ClipLease.objects.filter(pk=lease.pk).delete()[0]:
            return False
        audit.record("lease.released", lease.clip, actor=actor, project=lease.clip.project,
                     changes={"user": lease.user.get_username(), "kind": lease.kind})
    return True


def release_selected(leases: QuerySet[ClipLease], *, actor) -> int:
    """Managers: free exactly these leases (a colleague's claim on the same clip stays)."""
    with transaction.atomic():
        return sum(release_lease(lease, actor=actor)
                   for lease in leases.select_related("clip__project", "user").order_by("pk"))


def reassign_targets(project: Project, kind: str = ANNOTATE):
    """The members a lease of this kind may move to: annotators and up, reviewers and up for review."""
    from django.contrib.auth import get_user_model

    floor = ROLE_RANK[Role.REVIEWER if kind == REVIEW else Role.ANNOTATOR]
    roles = [role for role, rank in ROLE_RANK.items() if rank >= floor]
    return get_user_model().objects.filter(is_active=True, memberships__project=project,
                                           memberships__role__in=roles).order_by("username")


def reassign(lease: ClipLease, to_user, *, actor) -> ClipLease:
    """Managers: move a claim (and, for annotation, its draft) to another member."""
    project = lease.clip.project
    if not reassign_targets(project, lease.kind).filter(pk=to_user.pk).exists():
        raise QueueError(f"{to_user.get_username()} cannot take this {lease.kind} lease in {project.name}")
    from . import gold  # gold imports this module

    with transaction.atomic():
        if lease.kind == ANNOTATE and gold.has_open(lease.user, lease.clip):
            raise QueueError("This lease cannot move to someone else; release it instead.")
        if ClipLease.objects.filter(clip=lease.clip, user=to_user, kind=lease.kind).exists():
            raise QueueError(f"{to_user.get_username()} already holds this clip")
        if lease.kind == ANNOTATE and Annotation.objects.filter(clip=lease.clip, annotator=to_user).exists():
            raise QueueError(f"{to_user.get_username()} has already annotated this clip")
        if lease.kind == REVIEW and Annotation.objects.filter(clip=lease.clip, annotator=to_user,
                                                              status=Annotation.Status.SUBMITTED).exists():
            raise QueueError(f"{to_user.get_username()} annotated this clip and cannot review it")
        previous = lease.user
        if lease.kind == ANNOTATE:
            Annotation.objects.filter(clip=lease.clip, annotator=previous, status=Annotation.Status.DRAFT).update(
                annotator=to_user)
        # A fresh claim time: the new holder's lead time must not count the previous holder's minutes.
        now = timezone.now()
        ClipLease.objects.filter(pk=lease.pk).update(user=to_user, acquired_at=now,
                                                     expires_at=now + lease_length(project))
        audit.record("lease.reassigned", lease.clip, actor=actor, project=project,
                     changes={"from": previous.get_username(), "to": to_user.get_username(), "kind": lease.kind})
    lease.refresh_from_db()
    return lease


def skip(user, clip: Clip, reason: str) -> ClipSkip:
    """Pass on a clip, with the reason (data for managers). It is not offered to this user again."""
    reason = (reason or "").strip()
    if not reason:
        raise QueueError("Say why you skip this clip.")
    if len(reason) > MAX_SKIP_REASON:
        raise QueueError(f"Keep the reason under {MAX_SKIP_REASON} characters.")
    with transaction.atomic():
        skipped, _ = ClipSkip.objects.update_or_create(clip=clip, user=user, defaults={"reason": reason})
        release(user, clip, ANNOTATE)
        # A draft they started is left as it was; it no longer counts them in (no lease, not submitted).
        audit.record("clip.skipped", clip, actor=user, project=clip.project,
                     changes=audit.text_summary(reason, "reason"))
    return skipped


def recent_work(user, project: Project, limit: int = 50) -> list[Annotation]:
    """The user's own annotations in the project, most recently touched first. Their gold answers
    (services.gold) are among them as unsaved Annotations of the same shape: a gold item must not give itself
    away by missing from this list once answered."""
    from .gold import as_annotation  # gold builds on this module

    rows = list(Annotation.objects.filter(annotator=user, clip__project=project).select_related("clip")
                .order_by("-updated_at")[:limit])
    answers = (GoldAnswer.objects.filter(annotator=user, gold__project=project)
               .exclude(status=GoldAnswer.Status.SKIPPED).select_related("gold__clip", "annotator")
               .order_by("-updated_at"))
    rows += [as_annotation(answer) for answer in answers[:limit]]
    rows.sort(key=lambda row: row.updated_at, reverse=True)
    return rows[:limit]


def queue_counts(user, project: Project) -> dict[str, int]:
    """What the queue page shows: how many clips are open to this user (capped; never a full-table count)."""
    cap = 1000
    return {"annotate": annotate_candidates(user, project).values("pk")[:cap].count(),
            "review": review_candidates(user, project).values("pk")[:cap].count(),
            "cap": cap, "held": live(ClipLease.objects.filter(user=user, clip__project=project)).count()}


def expire_stale(now=None) -> int:
    """Beat: delete leases that expired a while ago (they already count as none; this keeps the table small)."""
    cutoff = (now or timezone.now()) - timedelta(hours=1)
    deleted, _ = ClipLease.objects.filter(expires_at__lt=cutoff).delete()
    return deleted

