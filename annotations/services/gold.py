"""Gold clips: verified clips with known labels, mixed into annotators' queues to measure their accuracy.

A manager marks a verified clip as gold (`mark`); its verified words are frozen on the GoldClip. The queue
(services.queue.next_clip) serves one to an annotator at `config.gold.rate` of the items it serves them
(`due`, `serve`), through the same clip page and the same URLs as any other clip, so the annotator cannot tell
which ones they are. Serving creates the annotator's GoldAnswer (one per gold clip and person, never served
twice) and an ordinary annotate lease, so a reload resumes it and the page's heartbeat works as usual.

A gold answer lives in its own table, never as an Annotation: it cannot change the clip's verification, and
agreement, snapshots, exports and training (which read Annotation) never see it. It is scored on submit,
and again after each vocabulary change (`rescore`), as a set over canonical terms of the project
vocabulary, so synonyms count; a label that matches only a gold term's emotion family earns half credit in
`score`. Per-annotator accuracy over time is
`gold_accuracy(project)`; an annotator below `config.gold.accuracy_floor` (over at least
`config.gold.min_answers` answers) is flagged, and a manager can send their work to review
(`send_work_to_review`).

Gold is served only to members whose role is annotator: reviewers and managers can read any clip's history,
and so the verified labels, which would make a gold item for them meaningless.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from .. import selectors
from ..models import (
    Annotation,
    Clip,
    ClipLease,
    ClipSkip,
    GoldAnswer,
    GoldClip,
    Membership,
    Project,
    Review,
    Role,
)
from ..project_config import project_config
from . import annotating, audit, evaluation, queue

# A label that matches only a gold term's family (not the term) earns this much in `score`.
FAMILY_CREDIT = 0.5
# Families too broad for partial credit: "positive" and "negative" share "general".
NO_FAMILY_CREDIT = frozenset({"general", "unassigned"})
# The flag reads an annotator's latest answers, so one who improved is not flagged for old mistakes.
RECENT = 20
CANDIDATES = 500


class GoldError(ValueError):
    """Safe to show to a manager."""


# --- scoring ------------------------------------------------------------------------------------------------
def _words(labels) -> list[str]:
    return [lab["term"] if isinstance(lab, dict) else str(lab) for lab in (labels or [])]


def _prf(hits_p: float, n_answer: int, hits_r: float, n_gold: int) -> tuple[float, float, float]:
    p = hits_p / n_answer if n_answer else 0.0
    r = hits_r / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score(answer_labels, gold_labels, vocabulary, wheel=None) -> dict[str, float]:
    """Score one answer against the gold labels, both resolved to canonical terms through `vocabulary` (an
    ml.vocabulary.Vocabulary), so "irritated" matches "annoyed" where the vocabulary says they are one term.
    A word the vocabulary lacks stands for itself (normalised) and has no family.

    precision, recall, f: over the sets of canonical terms. family_f: F over the sets of families.
    score: F where each answer term earns 1 if it is a gold term, FAMILY_CREDIT if only its family is among
    the gold terms' families (and the family is not a broad one), else 0; recall likewise for each gold term
    against the answer. The floor compares `score`.

    With an emotion wheel (ml.metrics.EmotionWheel, where a wheel folder is configured) the partial credit
    comes from the wheels instead of the families, averaged over the wheels that place the word (as the
    official metric averages over wheels): on one wheel, a word in the same fine emotion (level 2) as a word
    on the other side earns 1, one in the same coarse emotion (level 1: happy, sad, mad, scared...) earns
    FAMILY_CREDIT. A word no wheel places falls back to the family rule."""
    from ml.vocabulary import normalise

    def resolve(words):
        terms = {}
        for word in words:
            term = vocabulary.lookup(word)
            key = term.term if term else normalise(word)
            if key:
                terms[key] = term.family if term else None
        return terms

    answer, gold = resolve(_words(answer_labels)), resolve(_words(gold_labels))
    common = set(answer) & set(gold)
    precision, recall, f = _prf(len(common), len(answer), len(common), len(gold))
    fam_a = {fam for fam in answer.values() if fam}
    fam_g = {fam for fam in gold.values() if fam}
    _, _, family_f = _prf(len(fam_a & fam_g), len(fam_a), len(fam_a & fam_g), len(fam_g))

    def credit(term, family, other_terms, other_families):
        if term in other_terms:
            return 1.0
        return FAMILY_CREDIT if family and family not in NO_FAMILY_CREDIT and family in other_families else 0.0

    def wheel_credit(term, family, other_terms, other_families):
        if term in other_terms:
            return 1.0
        credits = []
        for index in range(len(wheel.levels)):
            fine, coarse = wheel.cluster(term, index, 2), wheel.cluster(term, index, 1)
            if fine is None and coarse is None:
                continue  # this wheel does not place the word
            if fine is not None and fine in {wheel.cluster(o, index, 2) for o in other_terms}:
                credits.append(1.0)
            elif coarse is not None and coarse in {wheel.cluster(o, index, 1) for o in other_terms}:
                credits.append(FAMILY_CREDIT)
            else:
                credits.append(0.0)
        return sum(credits) / len(credits) if credits else credit(term, family, other_terms, other_families)

    if wheel is not None:
        credit_p = sum(wheel_credit(t, fam, gold, fam_g) for t, fam in answer.items())
        credit_r = sum(wheel_credit(t, fam, answer, fam_a) for t, fam in gold.items())
    else:
        credit_p = sum(credit(t, fam, gold, fam_g) for t, fam in answer.items())
        credit_r = sum(credit(t, fam, answer, fam_a) for t, fam in gold.items())
    _, _, credited = _prf(credit_p, len(answer), credit_r, len(gold))
    return {"precision": precision, "recall": recall, "f": f, "family_f": family_f, "score": credited}


def configured_wheel():
    """The emotion wheels when a wheel folder is configured (AFFECTLOOP_WHEEL_DIR), else None: then the
    partial credit is by family. A folder that does not load is an error for the operator, not a silent
    fallback."""
    from ml.metrics import load_wheel

    folder = evaluation.wheel_dir()
    return load_wheel(folder) if folder else None


# --- managers mark and unmark -------------------------------------------------------------------------------
def mark(clip: Clip, *, actor) -> GoldClip:
    """Make a verified clip gold, freezing its verified words as the answer key. Marking again (after an
    unmark) reactivates it with the clip's current verified words."""
    labels = selectors.verified_labels(clip.project, Clip.objects.filter(pk=clip.pk)).get(clip.pk)
    if not labels:
        raise GoldError("Only a verified clip with labels can be gold.")
    with transaction.atomic():
        gold, created = GoldClip.objects.update_or_create(
            clip=clip, defaults={"project": clip.project, "labels": labels, "active": True})
        if created:
            GoldClip.objects.filter(pk=gold.pk).update(created_by=actor if getattr(actor, "pk", None) else None)
        audit.record("gold.marked", clip, actor=actor, project=clip.project,
                     changes={"gold": gold.pk, **audit.labels_summary(labels)})
    return gold


def unmark(clip: Clip, *, actor) -> bool:
    """Stop serving a gold clip. Its answers stay (and keep their scores). False when it was not gold."""
    with transaction.atomic():
        if not GoldClip.objects.filter(clip=clip, active=True).update(active=False):
            return False
        audit.record("gold.unmarked", clip, actor=actor, project=clip.project, changes={})
    return True


def is_gold(clip: Clip) -> bool:
    return GoldClip.objects.filter(clip=clip, active=True).exists()


# --- the queue ------------------------------------------------------------------------------------------------
def draws_gold(project_id: int, user_id: int, served: int, rate: float) -> bool:
    """Whether the `served`-th item served to this user is a gold one: a uniform number from a hash of
    (project, user, served) below `rate`. Deterministic, so a retry or a reload draws the same, and over many
    items about `rate` of them are gold. rate 0 is never."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"gold:{project_id}:{user_id}:{served}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < rate


def _eligible(user, project: Project) -> bool:
    return Membership.objects.filter(project=project, user=user, role=Role.ANNOTATOR).exists()


def due(user, project: Project) -> bool:
    """Whether the next item served to this annotator should be gold (no query when the rate is 0)."""
    rate = project_config(project).gold.rate
    if rate <= 0 or not _eligible(user, project):
        return False
    served = (Annotation.objects.filter(annotator=user, clip__project=project).count()
              + GoldAnswer.objects.filter(annotator=user, gold__project=project).count())
    return draws_gold(project.pk, user.pk, served, rate)


def _candidates(user, project: Project):
    """Active gold clips this person may get: ready, never served to them, and not one they annotated,
    reviewed or skipped (they would know its labels, or chose not to label it)."""
    clip = OuterRef("clip")
    return (GoldClip.objects.filter(project=project, active=True, clip__status=Clip.Status.READY)
            .exclude(Exists(GoldAnswer.objects.filter(gold=OuterRef("pk"), annotator=user)))
            .exclude(Exists(Annotation.objects.filter(clip=clip, annotator=user)))
            .exclude(Exists(Review.objects.filter(annotation__clip=clip, reviewer=user)))
            .exclude(Exists(ClipSkip.objects.filter(clip=clip, user=user)))
            .order_by("pk"))


def _lease(user, clip: Clip) -> ClipLease:
    now = timezone.now()
    lease, _ = ClipLease.objects.update_or_create(
        clip=clip, user=user, kind=ClipLease.Kind.ANNOTATE,
        defaults={"acquired_at": now, "expires_at": now + queue.lease_length(clip.project)})
    lease.clip = clip
    return lease


def resume(user, project: Project) -> ClipLease | None:
    """An open gold answer of this person (a lease that expired, a tab closed) comes back first, so a served
    gold item is answered or skipped, never dropped for a fresh draw."""
    answer = (GoldAnswer.objects.filter(annotator=user, gold__project=project, gold__active=True,
                                        status=GoldAnswer.Status.OPEN)
              .select_related("gold__clip__project").order_by("served_at").first())
    return _lease(user, answer.gold.clip) if answer is not None else None


def serve(user, project: Project) -> ClipLease | None:
    """Serve one gold clip to this person: its GoldAnswer (opened with what the clip page would preselect)
    and an annotate lease. None when no gold clip is open to them."""
    ids = list(_candidates(user, project).values_list("pk", flat=True)[:CANDIDATES])
    if not ids:
        return None
    served = GoldAnswer.objects.filter(annotator=user, gold__project=project).count()
    pick = int.from_bytes(hashlib.sha256(f"pick:{project.pk}:{user.pk}:{served}".encode()).digest()[:8], "big")
    gold = GoldClip.objects.select_related("clip__project").get(pk=ids[pick % len(ids)])
    clip = gold.clip
    labels = annotating.fused_labels(clip) if annotating.suggestion_mode(clip) == "preselect" else []
    try:
        with transaction.atomic():
            GoldAnswer.objects.get_or_create(gold=gold, annotator=user,
                                             defaults={"labels": labels, "served_at": timezone.now()})
    except IntegrityError:  # a concurrent serve of the same item won; it is the same answer
        pass
    return _lease(user, clip)


def answer_for(user, clip: Clip) -> GoldAnswer | None:
    """This person's gold answer on the clip, open or submitted (a skipped one is done with): the clip page,
    its draft and submit go to this module when there is one and the person has no annotation of the clip."""
    return (GoldAnswer.objects.filter(gold__clip=clip, annotator=user)
            .exclude(status=GoldAnswer.Status.SKIPPED).select_related("gold__clip__project").first())


def has_open(user, clip: Clip) -> bool:
    return GoldAnswer.objects.filter(gold__clip=clip, annotator=user, status=GoldAnswer.Status.OPEN).exists()


def take(answer: GoldAnswer) -> ClipLease | None:
    """Opening the clip page of an open answer: its lease, taken again if it lapsed (a gold item holds no
    place that anyone else waits for). None for a submitted answer (read only, as a submitted annotation)."""
    if answer.status != GoldAnswer.Status.OPEN:
        return None
    return _lease(answer.annotator, answer.gold.clip)


def heartbeat(user, clip: Clip) -> ClipLease | None:
    """The clip page's heartbeat for an open gold answer; None when the clip is no gold item for this user."""
    if not has_open(user, clip):
        return None
    lease = ClipLease.objects.filter(user=user, clip=clip, kind=ClipLease.Kind.ANNOTATE).first()
    if lease is not None and lease.expires_at > timezone.now():
        return queue.renew(lease)
    return _lease(user, clip)


# --- the answer -----------------------------------------------------------------------------------------------
def _locked(answer: GoldAnswer) -> GoldAnswer:
    return GoldAnswer.objects.select_for_update().select_related("gold__clip__project").get(pk=answer.pk)


def state(answer: GoldAnswer) -> dict:
    """The clip page's view of the answer: the same shape as an annotation's (work_views._state)."""
    status = "draft" if answer.status == GoldAnswer.Status.OPEN else answer.status
    return {"version": answer.version, "labels": answer.labels, "status": status}


def as_annotation(answer: GoldAnswer) -> Annotation:
    """An unsaved Annotation carrying the answer's state, for the clip page's template (never saved)."""
    status = Annotation.Status.DRAFT if answer.status == GoldAnswer.Status.OPEN else Annotation.Status.SUBMITTED
    return Annotation(clip=answer.gold.clip, annotator=answer.annotator, labels=answer.labels, status=status,
                      version=answer.version, updated_at=answer.updated_at)


class Conflict(annotating.Conflict):
    """A stale or repeated write to a gold answer; `answer` is the stored one."""

    def __init__(self, answer: GoldAnswer, message: str = "This annotation changed since you loaded it."):
        super().__init__(as_annotation(answer), message)
        self.answer = answer


def save_draft(answer: GoldAnswer, *, labels, base_version: int) -> GoldAnswer:
    """Autosave, as annotating.save_draft: a stale version raises Conflict."""
    labels = annotating.clean_labels(labels)
    with transaction.atomic():
        current = _locked(answer)
        if current.status != GoldAnswer.Status.OPEN:
            raise Conflict(current, "This annotation was already submitted.")
        if base_version != current.version:
            raise Conflict(current)
        current.labels = annotating.label_sources(current.gold.clip, labels)
        current.version += 1
        current.save(update_fields=["labels", "version", "updated_at"])
    return current


def submit(answer: GoldAnswer, *, labels, base_version: int, idempotency_key: str = "") -> GoldAnswer:
    """Submit and score the answer, once per idempotency key; a stale base version raises Conflict. Touches
    no Annotation, Review or Clip: the clip's verification and every figure built on annotations stay as
    they were."""
    from .vocabulary import project_vocabulary

    labels = annotating.clean_labels(labels)
    if not labels:
        raise annotating.AnnotationError("Add at least one label before submitting.")
    key = (idempotency_key or "")[:64]
    with transaction.atomic():
        current = _locked(answer)
        if key and current.last_idempotency_key == key:
            return current  # a retry of a submit that already landed
        if current.status != GoldAnswer.Status.OPEN:
            raise Conflict(current, "This annotation was already submitted.")
        if base_version != current.version:
            raise Conflict(current)
        clip = current.gold.clip
        current.labels = annotating.label_sources(clip, labels)
        for name, value in score(current.labels, current.gold.labels, project_vocabulary(clip.project),
                                 wheel=configured_wheel()).items():  # again on each vocabulary change: rescore
            setattr(current, name, round(value, 6))
        current.status = GoldAnswer.Status.SUBMITTED
        current.version += 1
        current.submitted_at = timezone.now()
        current.last_idempotency_key = key
        current.save()
        queue.release(current.annotator, clip, queue.ANNOTATE)
        audit.record("gold.answered", current, actor=current.annotator, project=clip.project,
                     changes={"gold": current.gold_id, "clip": clip.pk,
                              **audit.labels_summary(current.labels)})
    return current


SCORES = ("precision", "recall", "f", "family_f", "score")


def rescore(project: Project, terms=None) -> int:
    """Score the project's submitted answers again after its vocabulary changed, as the dashboard's counts are
    (labels resolve when read): after "irritated" is merged into "annoyed", an earlier "irritated" for
    "annoyed" is a match. With `terms`, only the answers whose words or gold words include one of them (the
    only ones whose score can move). Writes only the scores that changed, and not updated_at (the answer was
    not touched). Returns how many answers changed."""
    from ml.vocabulary import normalise

    from .vocabulary import project_vocabulary

    keys = None if terms is None else {normalise(t) for t in terms}
    vocab, wheel = project_vocabulary(project), configured_wheel()
    changed = []
    answers = (GoldAnswer.objects.filter(gold__project=project, status=GoldAnswer.Status.SUBMITTED)
               .select_related("gold").only("labels", "gold__labels", *SCORES).order_by("pk"))
    for answer in answers.iterator(chunk_size=500):
        words = _words(answer.labels) + _words(answer.gold.labels)
        if keys is not None and not keys & {normalise(w) for w in words}:
            continue
        new = {name: round(value, 6) for name, value in score(answer.labels, answer.gold.labels, vocab,
                                                              wheel=wheel).items()}
        if any(getattr(answer, name) != value for name, value in new.items()):
            for name, value in new.items():
                setattr(answer, name, value)
            changed.append(answer)
    GoldAnswer.objects.bulk_update(changed, SCORES, batch_size=500)
    return len(changed)


def skip(answer: GoldAnswer, reason: str) -> None:
    """Skipping a gold item is skipping a clip (queue.skip: the reason is kept, it is not offered again);
    the answer is closed unscored and counts for nothing."""
    with transaction.atomic():
        queue.skip(answer.annotator, answer.gold.clip, reason)
        GoldAnswer.objects.filter(pk=answer.pk, status=GoldAnswer.Status.OPEN).update(
            status=GoldAnswer.Status.SKIPPED, updated_at=timezone.now())


# --- managers read and act ------------------------------------------------------------------------------------
def _week(moment) -> str:
    day = timezone.localtime(moment).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def _mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


def gold_accuracy(project: Project) -> dict:
    """Per-annotator gold accuracy, plain JSON (for the dashboard's stored figures):

    {"floor": float, "min_answers": int, "gold_clips": active gold clips,
     "annotators": [{"user_id", "username", "n", "f", "family_f", "score", "recent_score", "flagged",
                     "trusted", "last_at": ISO time,
                     "weeks": [{"week": ISO date of the Monday, "n", "f", "family_f", "score"}, ...]}, ...]}

    f, family_f and score are means over the person's submitted answers (see `score`); recent_score is the
    mean score of their latest RECENT answers, and `flagged` is recent_score < floor once n >= min_answers.
    Sorted flagged first, then by username. Only people with at least one submitted answer are listed."""
    config = project_config(project).gold
    rows = (GoldAnswer.objects.filter(gold__project=project, status=GoldAnswer.Status.SUBMITTED)
            .order_by("annotator_id", "submitted_at", "pk")
            .values_list("annotator_id", "annotator__username", "submitted_at", "f", "family_f", "score"))
    people: dict[int, dict] = {}
    for user_id, username, at, f, family_f, credited in rows:
        person = people.setdefault(user_id, {"username": username, "answers": []})
        person["answers"].append((at, f, family_f, credited))
    trusted = dict(Membership.objects.filter(project=project, user_id__in=list(people))
                   .values_list("user_id", "trusted"))
    out = []
    for user_id, person in people.items():
        answers = person["answers"]
        by_week = defaultdict(list)
        for answer in answers:
            by_week[_week(answer[0])].append(answer)
        recent = _mean(a[3] for a in answers[-RECENT:])
        n = len(answers)
        out.append({
            "user_id": user_id, "username": person["username"], "n": n,
            "f": _mean(a[1] for a in answers), "family_f": _mean(a[2] for a in answers),
            "score": _mean(a[3] for a in answers), "recent_score": recent,
            "flagged": n >= config.min_answers and recent is not None and recent < config.accuracy_floor,
            "trusted": bool(trusted.get(user_id, False)), "last_at": answers[-1][0].isoformat(),
            "weeks": [{"week": week, "n": len(items), "f": _mean(a[1] for a in items),
                       "family_f": _mean(a[2] for a in items), "score": _mean(a[3] for a in items)}
                      for week, items in sorted(by_week.items())],
        })
    out.sort(key=lambda p: (not p["flagged"], p["username"]))
    return {"floor": config.accuracy_floor, "min_answers": config.min_answers,
            "gold_clips": GoldClip.objects.filter(project=project, active=True).count(), "annotators": out}


def flagged(project: Project) -> dict[int, dict]:
    """user id → their gold_accuracy entry, for the annotators below the floor (the members page)."""
    return {p["user_id"]: p for p in gold_accuracy(project)["annotators"] if p["flagged"]}


def send_work_to_review(project: Project, user, *, actor) -> dict[str, int]:
    """Managers: every clip this person submitted an annotation for goes to review (queue.send_to_review:
    a second look at verified ones, review before the overlap for the rest), and a trusted annotator loses
    the trust, so their next submits wait for a reviewer too. Returns send_to_review's counts plus
    `untrusted` (1 when trust was revoked)."""
    from .projects import set_membership

    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
        if membership is None:
            raise GoldError("Not a member of this project.")
        clips = project.clips.filter(Exists(Annotation.objects.filter(
            clip=OuterRef("pk"), annotator=user, status=Annotation.Status.SUBMITTED)))
        outcome = queue.send_to_review(clips, actor=actor)
        untrusted = 0
        if membership.trusted:
            set_membership(project=project, user=user, role=membership.role, trusted=False, actor=actor)
            untrusted = 1
        audit.record("gold.work_sent_to_review", membership, actor=actor, project=project,
                     changes={"user": user.get_username(), **outcome, "untrusted": untrusted})
    return {**outcome, "untrusted": untrusted}
