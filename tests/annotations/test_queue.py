"""The queue and the annotation lifecycle, through the services the views call."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import Annotation, AnnotationRevision, AuditEvent, Clip, ClipLease, Prediction, Role
from annotations.services import annotating, audit, queue, reviews
from annotations.services.projects import set_membership, update_config

pytestmark = pytest.mark.django_db


def ready_clip(project, n, priority=None, **extra):
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}", name=f"clip-{n}",
                               size_bytes=1, status=Clip.Status.READY, duration=2.0, priority=priority, **extra)


@pytest.fixture
def people(project, django_user_model):
    users = {"alice": project.memberships.get(user__username="alice").user}
    for name in ("bob", "carol", "rita"):
        users[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-12345")
        set_membership(project=project, user=users[name], role=Role.REVIEWER if name == "rita" else Role.ANNOTATOR)
    return users


def test_clips_come_in_priority_order_with_unscored_last(project, people):
    low, none, high = ready_clip(project, 1, 0.1), ready_clip(project, 2, None), ready_clip(project, 3, 0.9)
    Clip.objects.create(project=project, file="clips/p.mp4", sha256="f" * 64, name="pending", size_bytes=1)
    order = []
    for name in ("alice", "bob", "carol"):
        order.append(queue.next_clip(people[name], project).clip)
    assert order == [high, low, none]
    assert queue.next_clip(people["rita"], project) is None  # the pending clip is never offered


def test_a_reload_resumes_the_held_clip(project, people):
    ready_clip(project, 1, 0.5), ready_clip(project, 2, 0.4)
    first = queue.next_clip(people["alice"], project)
    again = queue.next_clip(people["alice"], project)
    assert again.pk == first.pk and again.expires_at >= first.expires_at


def test_overlap_bounds_how_many_hold_a_clip(project, people):
    update_config(project, {"annotation": {"overlap": 2}})
    clip = ready_clip(project, 1, 0.9)
    assert queue.next_clip(people["alice"], project).clip == clip
    assert queue.next_clip(people["bob"], project).clip == clip
    assert queue.next_clip(people["carol"], project) is None
    # Alice submits: she is done with it, and it still has one holder (Bob) of two places.
    annotation = annotating.start(people["alice"], clip)
    annotating.submit(annotation, labels=["calm"], base_version=annotation.version)
    assert queue.next_clip(people["alice"], project) is None
    assert queue.next_clip(people["carol"], project) is None


def test_an_expired_lease_frees_the_place(project, people):
    clip = ready_clip(project, 1, 0.9)
    lease = queue.next_clip(people["alice"], project)
    assert queue.next_clip(people["bob"], project) is None
    ClipLease.objects.filter(pk=lease.pk).update(acquired_at=timezone.now() - timedelta(hours=2),
                                                 expires_at=timezone.now() - timedelta(hours=1))
    assert queue.next_clip(people["bob"], project).clip == clip
    with pytest.raises(queue.QueueError):
        queue.heartbeat(people["alice"], clip)  # her tab wakes up: the place is taken


def test_the_heartbeat_renews(project, people):
    clip = ready_clip(project, 1)
    lease = queue.next_clip(people["alice"], project)
    ClipLease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + timedelta(seconds=5))
    renewed = queue.heartbeat(people["alice"], clip)
    assert renewed.expires_at > timezone.now() + timedelta(minutes=20)


def test_skipping_needs_a_reason_and_is_remembered(project, people):
    first, second = ready_clip(project, 1, 0.9), ready_clip(project, 2, 0.1)
    queue.next_clip(people["alice"], project)
    with pytest.raises(queue.QueueError, match="why"):
        queue.skip(people["alice"], first, "  ")
    queue.skip(people["alice"], first, "audio is silent")
    assert queue.next_clip(people["alice"], project).clip == second
    assert queue.next_clip(people["bob"], project).clip == first  # others still get it
    # The reason is free text: the audit event keeps its hash only.
    event = AuditEvent.objects.get(action="clip.skipped")
    assert event.changes == audit.text_summary("audio is silent", "reason") and "silent" not in str(event.changes)


def test_drafts_versions_conflicts_and_idempotent_submit(project, people):
    clip = ready_clip(project, 1)
    queue.next_clip(people["alice"], project)
    draft = annotating.start(people["alice"], clip)
    assert draft.version == 1 and draft.labels == []
    with pytest.raises(annotating.AnnotationError, match="evidence"):
        annotating.save_draft(draft, labels=[{"term": "anxious", "evidence": ["bogus"]}], base_version=1)
    a_minute_ago = timezone.now() - timedelta(minutes=1)  # the server counts no more time than has passed
    ClipLease.objects.filter(clip=clip).update(acquired_at=a_minute_ago)
    Annotation.objects.filter(pk=draft.pk).update(updated_at=a_minute_ago)
    saved = annotating.save_draft(draft, labels=[{"term": "anxious", "evidence": ["face"], "note": "jaw"},
                                                 "relieved", "Anxious"], base_version=1, lead_time=12)
    Annotation.objects.filter(pk=saved.pk).update(updated_at=a_minute_ago)
    assert saved.version == 2 and [x["term"] for x in saved.labels] == ["anxious", "relieved"]
    assert saved.labels[0] == {"term": "anxious", "source": "human", "note": "jaw", "evidence": ["face"]}
    # A second tab still on version 1: a conflict carrying the stored version, never an overwrite.
    with pytest.raises(annotating.Conflict) as conflict:
        annotating.submit(draft, labels=["calm"], base_version=1, idempotency_key="k1")
    assert conflict.value.annotation.version == 2 and conflict.value.annotation.labels == saved.labels
    done = annotating.submit(saved, labels=saved.labels, base_version=2, idempotency_key="k2", lead_time=5)
    assert done.status == Annotation.Status.SUBMITTED and done.version == 3 and done.lead_time == 17
    again = annotating.submit(saved, labels=["something else"], base_version=2, idempotency_key="k2")
    assert again.version == 3 and [x["term"] for x in again.labels] == ["anxious", "relieved"]
    assert AnnotationRevision.objects.filter(annotation=done).count() == 1
    assert not ClipLease.objects.filter(clip=clip).exists()  # the lease ends with the submit
    with pytest.raises(annotating.Conflict, match="already submitted"):
        annotating.save_draft(done, labels=["calm"], base_version=3)


def test_a_rejection_returns_the_work_to_its_author_first(project, people):
    clip, other = ready_clip(project, 1, 0.1), ready_clip(project, 2, 0.9)
    queue.claim(people["alice"], clip)
    annotation = annotating.start(people["alice"], clip)
    annotation = annotating.submit(annotation, labels=["bored"], base_version=1)
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.SUBMITTED
    review_lease = queue.next_clip(people["rita"], project, queue.REVIEW)
    assert review_lease.clip == clip
    assert queue.next_clip(people["bob"], project, queue.REVIEW) is None  # one reviewer per clip
    reviews.review(annotation, reviewer=people["rita"], decision="reject", reason="she is amused, not bored")
    annotation.refresh_from_db()
    assert annotation.status == Annotation.Status.DRAFT and annotation.version == 3
    # Her own rejected clip comes back before the higher-priority clip nobody has touched.
    assert queue.next_clip(people["alice"], project).clip == clip
    assert queue.next_clip(people["bob"], project).clip == other
    kinds = [e["kind"] for e in annotating.history(clip)]
    assert kinds == ["submitted", "reject"]


def test_review_leases_never_block_annotators(project, people):
    update_config(project, {"annotation": {"overlap": 2}})
    clip = ready_clip(project, 1)
    queue.claim(people["alice"], clip)
    a = annotating.start(people["alice"], clip)
    annotating.submit(a, labels=["calm"], base_version=a.version)
    # Not yet reviewable (one of two submissions), but a reviewer lease would not count against annotators.
    ClipLease.objects.create(clip=clip, user=people["rita"], kind="review", acquired_at=timezone.now(),
                             expires_at=timezone.now() + timedelta(minutes=30))
    assert queue.next_clip(people["bob"], project).clip == clip


def test_reviewers_never_review_their_own_work(project, people):
    clip = ready_clip(project, 1)
    queue.claim(people["rita"], clip)
    a = annotating.start(people["rita"], clip)
    annotating.submit(a, labels=["calm"], base_version=a.version)
    assert queue.next_clip(people["rita"], project, queue.REVIEW) is None
    assert queue.next_clip(people["alice"], project, queue.REVIEW).clip == clip


def test_managers_release_and_reassign(project, people, manager):
    clip = ready_clip(project, 1)
    lease = queue.next_clip(people["alice"], project)
    annotating.start(people["alice"], clip)
    moved = queue.reassign(lease, people["bob"], actor=manager)
    assert moved.user == people["bob"] and Annotation.objects.get(clip=clip).annotator == people["bob"]
    assert queue.release_leases(Clip.objects.filter(pk=clip.pk), actor=manager) == 1
    assert AuditEvent.objects.filter(action="lease.reassigned").exists()
    assert AuditEvent.objects.filter(action="lease.released").exists()


def test_preselect_starts_from_the_fused_labels_but_test_clips_are_blind(project, people):
    update_config(project, {"annotation": {"suggestions": "preselect"},
                            "training": {"split": {"train": 0.5, "val": 0.0, "test": 0.5}}})
    from annotations import selectors

    clips = [ready_clip(project, n) for n in range(1, 13)]
    for clip in clips:
        Prediction.objects.create(clip=clip, backend="fused", model_version="fused:x",
                                  labels=[{"term": "calm", "score": 0.8}])
    splits = {clip.pk: selectors.clip_split(clip) for clip in clips}
    assert set(splits.values()) == {"train", "test"}
    for clip in clips:
        draft = annotating.start(people["alice"], clip)
        expected = [] if splits[clip.pk] == "test" else ["calm"]
        assert [x["term"] for x in draft.labels] == expected
        assert draft.status == Annotation.Status.DRAFT  # never submitted without a human


@pytest.mark.parametrize("strategy", ["novelty", "families"])
def test_priorities_are_rescored_once_the_verified_pool_has_grown(project, people, manager, strategy):
    """Only a strategy that weighs novelty goes stale as the pool grows; the default `families` reads only the
    predictions, so the beat leaves its priorities alone."""
    from annotations.models import Project, Review
    from annotations.services import prelabel_run
    from annotations.services.projects import update_config
    from annotations.tasks import rescore_priorities

    update_config(project, {"active_learning": {"strategy": strategy}})
    clips = [ready_clip(project, n, priority=0.5) for n in range(1, 31)]
    for clip in clips:
        for backend, terms in (("internvl", ["calm"]), ("affectgpt", ["angry" if clip.pk % 2 else "calm"])):
            Prediction.objects.create(clip=clip, backend=backend, model_version=f"{backend}:x",
                                      labels=[{"term": t, "score": 0.7} for t in terms])
    assert prelabel_run.rescore_priorities(project) == 0  # nothing verified yet: not due
    for clip in clips[:prelabel_run.RESCORE_MIN]:
        a = Annotation.objects.create(clip=clip, annotator=people["alice"], labels=[{"term": "calm"}],
                                      status="submitted", submitted_at=timezone.now())
        Review.objects.create(annotation=a, reviewer=manager, decision="accept", annotation_version=a.version)
        reviews.refresh_label_state(clip)
    if strategy == "families":
        assert rescore_priorities.delay().get() == {}
        assert set(Clip.objects.filter(pk__in=[c.pk for c in clips]).values_list("priority", flat=True)) == {0.5}
        return
    assert rescore_priorities.delay().get() == {project.slug: 30 - prelabel_run.RESCORE_MIN}
    project.refresh_from_db()
    assert project.scored_pool_size == prelabel_run.RESCORE_MIN
    left = Clip.objects.filter(pk__in=[c.pk for c in clips[prelabel_run.RESCORE_MIN:]])
    assert all(c.priority != 0.5 and "disagreement" in c.al_signals for c in left)
    assert {c.disagreement > 0 for c in left if c.pk % 2} == {True}
    assert prelabel_run.rescore_priorities(Project.objects.get(pk=project.pk)) == 0  # not grown since


def test_the_partial_queue_index_matches_the_states_that_need_humans():
    """migrations/0011's WHERE must list exactly selectors.NEEDS_HUMANS, or the planner skips the index."""
    import importlib
    import re

    from annotations import selectors

    where = importlib.import_module("migrations.0011_partial_queue_index").WHERE
    listed = set(re.findall(r"'(\w+)'", where.split("IN", 1)[1]))
    assert listed == {str(s) for s in selectors.NEEDS_HUMANS} and "status = 'ready'" in where


def test_rejected_work_keeps_its_authors_place(project, people):
    clip = ready_clip(project, 1, 0.9)
    queue.claim(people["alice"], clip)
    a = annotating.start(people["alice"], clip)
    a = annotating.submit(a, labels=["bored"], base_version=a.version)
    reviews.review(a, reviewer=people["rita"], decision="reject", reason="look again")
    assert queue.next_clip(people["bob"], project) is None  # overlap 1: the place is Alice's
    with pytest.raises(queue.QueueError):
        queue.claim(people["bob"], clip)
    assert queue.next_clip(people["alice"], project).clip == clip


def test_a_verdict_on_what_changed_meanwhile_is_refused(project, people):
    clip = ready_clip(project, 1)
    queue.claim(people["alice"], clip)
    a = annotating.start(people["alice"], clip)
    a = annotating.submit(a, labels=["bored"], base_version=a.version)
    seen = a.version
    reviews.review(a, reviewer=people["rita"], decision="reject", reason="look again")
    with pytest.raises(reviews.ReviewError, match="no longer waiting"):
        reviews.review(a, reviewer=people["carol"], decision="accept", version=seen)
