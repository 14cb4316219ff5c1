"""Derived data kept true as its sources change, off the web request: the clip index after vocabulary and
split-rule changes (Celery tasks dispatched on commit), the queue priorities re-scored in bulk, the project
page's polled progress, and the leases of members who leave or lose the reviewer role."""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotations import selectors, tasks
from annotations.models import (
    Annotation,
    AuditEvent,
    Clip,
    ClipLabel,
    ClipLease,
    EmotionTerm,
    Prediction,
    Role,
)
from annotations.project_config import project_config
from annotations.services import annotating, clip_index, prelabel_run, projects, queue, vocabulary

pytestmark = pytest.mark.django_db


def make(project, n, *, status=Clip.Status.READY, **extra):
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}", name=f"clip-{n:03d}",
                               size_bytes=1, status=status, duration=2.0 if status == Clip.Status.READY else None,
                               **extra)


def fused(clip, *terms):
    return Prediction.objects.create(clip=clip, backend="fused", model_version="fused:x",
                                     labels=[{"term": t, "score": 0.8} for t in terms])


def index(clip):
    return sorted(ClipLabel.objects.filter(clip=clip).values_list("term", "family"))


@pytest.fixture
def indexed_batches(monkeypatch):
    """The clip ids of each index_clips call, in order."""
    batches = []
    real = clip_index.index_clips

    def spy(clips):
        clips = list(clips)
        batches.append([c.pk for c in clips])
        real(clips)

    monkeypatch.setattr(clip_index, "index_clips", spy)
    return batches


# --- the clip index follows the vocabulary ----------------------------------------------------------------
def test_a_proposed_then_approved_term_reaches_the_index_of_the_clips_that_carry_it(
        project, manager, django_capture_on_commit_callbacks, indexed_batches):
    carrier, other = make(project, 1), make(project, 2)
    fused(carrier, "Zoom-Fatigued")  # unknown: stored as written, in no family
    fused(other, "calm")
    clip_index.index_clips([carrier, other])
    assert index(carrier) == [("Zoom-Fatigued", "unassigned")]
    untouched = index(other)
    indexed_batches.clear()

    with django_capture_on_commit_callbacks(execute=True):
        row = vocabulary.propose_term(project, "zoom fatigued", actor=manager)
    assert index(carrier) == [("zoom fatigued", "unassigned")]  # the spelling the clip list's filter looks up
    with django_capture_on_commit_callbacks(execute=True):
        vocabulary.approve_term(row, family="sadness", valence="negative", actor=manager)
    assert index(carrier) == [("zoom fatigued", "sadness")]
    assert index(other) == untouched
    assert indexed_batches == [[carrier.pk], [carrier.pk]]  # only the clips carrying the term


def test_an_admin_edit_reindexes_the_project_in_a_task_after_commit(project, manager,
                                                                    django_capture_on_commit_callbacks):
    mapped, remapped = make(project, 1), make(project, 2)
    fused(mapped, "chuffed")
    fused(remapped, "glad")  # a synonym of happy
    clip_index.index_clips([mapped, remapped])
    assert index(mapped) == [("chuffed", "unassigned")] and index(remapped) == [("happy", "joy")]

    happy = EmotionTerm.objects.get(project=project, term="happy")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        synonym = EmotionTerm.objects.create(project=project, term="chuffed", kind="synonym", canonical=happy)
        vocabulary.vocabulary_changed(project, synonym, actor=manager)  # what the admin's save calls
    assert len(queued) == 1 and index(mapped) == [("chuffed", "unassigned")]  # queued, not run inline
    queued[0]()
    assert index(mapped) == [("happy", "joy")]

    # A synonym moved to another term: the clips were indexed under the old term, which the row no longer
    # names, so every clip is reindexed.
    glad = EmotionTerm.objects.get(project=project, term="glad")
    glad.canonical = EmotionTerm.objects.get(project=project, term="anxious")
    glad.save()
    with django_capture_on_commit_callbacks(execute=True):
        vocabulary.vocabulary_changed(project, glad, actor=manager)
    assert index(remapped) == [("anxious", "fear")]


def test_the_reindex_task_walks_one_project_in_chunks_and_slices(project, manager, monkeypatch, indexed_batches,
                                                                 django_capture_on_commit_callbacks):
    monkeypatch.setattr(clip_index, "CHUNK", 2)
    monkeypatch.setattr(clip_index, "SLICE_CHUNKS", 2)
    clips = [make(project, n) for n in range(1, 6)]
    other = projects.create_project(name="Other", creator=manager)
    make(other, 9)
    with django_capture_on_commit_callbacks(execute=False) as rest:
        assert tasks.reindex_project(project.pk) == 4  # two chunks, then the rest is queued
    assert indexed_batches == [[c.pk for c in clips[:2]], [c.pk for c in clips[2:4]]]
    with django_capture_on_commit_callbacks(execute=True):
        rest[0]()
    assert indexed_batches[2:] == [[clips[4].pk]]
    assert tasks.reindex_project(999_999) == 0  # a deleted project: nothing to do

    indexed_batches.clear()
    for n, clip in enumerate(clips):
        fused(clip, "calm" if n % 2 else "Wistful-ish")
    clip_index.index_clips(clips)
    indexed_batches.clear()
    assert tasks.reindex_project(project.pk, ["wistful ish"]) == 3
    assert indexed_batches == [[clips[0].pk, clips[2].pk], [clips[4].pk]]


@pytest.mark.django_db(transaction=True)
def test_two_indexes_of_one_clip_at_once_both_succeed(project):
    """A reindex task and a submit index the same clip: the second one's delete started before the first
    committed its rows, so its insert meets them. It reads again and replaces them instead of failing."""
    import threading

    from django.db import connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers: the race needs PostgreSQL")
    clip = make(project, 1)
    fused(clip, "calm", "tense")
    clip_index.index_clips([clip])
    first_written, release = threading.Event(), threading.Event()
    errors = []

    def first():
        try:
            with transaction.atomic():
                clip_index.index_clips([Clip.objects.select_related("project").get(pk=clip.pk)])
                first_written.set()
                release.wait(10)
        finally:
            connections.close_all()

    def second():
        try:
            clip_index.index_clips([Clip.objects.select_related("project").get(pk=clip.pk)])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start()
    assert first_written.wait(10)
    b.start()
    time.sleep(0.5)  # b now waits on a's deleted rows
    release.set()
    a.join(10), b.join(10)
    assert errors == []
    assert [term for term, _ in index(clip)] == ["calm", "tense"]  # one set of rows, not two


# --- the split rule changes in a task, not in the request --------------------------------------------------
def test_a_new_split_rule_is_applied_by_a_task_queued_on_commit(project, monkeypatch,
                                                                django_capture_on_commit_callbacks):
    monkeypatch.setattr(clip_index, "CHUNK", 5)
    clips = [make(project, n) for n in range(1, 13)]
    clip_index.index_clips(clips)
    before = dict(Clip.objects.values_list("pk", "split"))
    assert set(before.values()) <= {"train", "val", "test"} and all(before.values())

    with django_capture_on_commit_callbacks(execute=False) as queued, CaptureQueriesContext(connection) as sql:
        projects.update_config(project, {"training": {"split": {"train": 0.5, "val": 0.0, "test": 0.5}}})
    assert not [q for q in sql.captured_queries if q["sql"].startswith('UPDATE "annotations_clip"')]
    assert dict(Clip.objects.values_list("pk", "split")) == before  # the request only queued it
    for callback in queued:
        callback()
    config = project_config(Clip.objects.select_related("project").first().project)
    after = {c.pk: c.split for c in Clip.objects.all()}
    assert after == {c.pk: selectors.clip_split(c, config) for c in clips}
    assert set(after.values()) == {"train", "test"} and after != before

    with CaptureQueriesContext(connection) as sql:
        assert tasks.resplit(project.pk) == 0
    assert not [q for q in sql.captured_queries if q["sql"].startswith("UPDATE")]  # nothing moved, nothing written


# --- queue priorities re-scored in bulk ---------------------------------------------------------------------
def test_rescoring_writes_each_chunk_in_one_statement_with_the_same_results(project, monkeypatch):
    from ml.types import Label

    monkeypatch.setattr(prelabel_run, "RESCORE_CHUNK", 3)
    clips = [make(project, n, priority=0.5) for n in range(1, 8)]
    per_clip = {}
    for clip in clips:
        per_clip[str(clip.pk)] = {}
        for backend, terms in (("internvl", ["calm"]), ("affectgpt", ["angry" if clip.pk % 2 else "calm"])):
            Prediction.objects.create(clip=clip, backend=backend, model_version=f"{backend}:x",
                                      labels=[{"term": t, "score": 0.7} for t in terms])
            per_clip[str(clip.pk)][backend] = [Label(term=t, score=0.7, source=backend) for t in terms]
    vocab = vocabulary.project_vocabulary(project)
    strategy = prelabel_run.active_strategy(project_config(project), vocab)
    expected = strategy.signals(per_clip, prelabel_run.verified_pool(project, vocab))

    with CaptureQueriesContext(connection) as sql:
        assert prelabel_run.rescore_priorities(project, force=True) == 7
    writes = [q for q in sql.captured_queries if q["sql"].startswith('UPDATE "annotations_clip"')]
    assert len(writes) == 3  # 7 clips in chunks of 3
    for clip in Clip.objects.filter(pk__in=[c.pk for c in clips]):
        values = expected[str(clip.pk)]
        assert clip.priority == strategy.combine(values)
        assert clip.al_signals == {"strategy": strategy.name, **{k: round(v, 6) for k, v in values.items()}}
        assert clip.disagreement == values["disagreement"]
    assert {c.disagreement > 0 for c in Clip.objects.all() if c.pk % 2} == {True}


# --- the project page's polled progress ---------------------------------------------------------------------
def test_a_busy_answer_is_reused_for_a_few_seconds_then_recomputed(project, monkeypatch):
    monkeypatch.setattr(selectors, "PROGRESS_CACHE_SECONDS", 1)
    clip = make(project, 1, status=Clip.Status.PENDING)
    with CaptureQueriesContext(connection) as first:
        answer = selectors.live_progress(project)
    assert answer["busy"] and answer["counts"]["pending"] == 1
    with CaptureQueriesContext(connection) as second:
        assert selectors.live_progress(project) == answer
    assert len(second.captured_queries) < len(first.captured_queries)
    assert len(second.captured_queries) == 0

    # The clip is ingested and pre-labeled: within the window the poll still reads the kept answer...
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.READY, duration=2.0)
    fused(clip, "calm")
    assert selectors.live_progress(project) == answer
    # ...and after it (a second here, or twice what computing it took), the fresh one, exactly what an
    # uncached computation says.
    deadline = time.monotonic() + 10
    while (later := selectors.live_progress(project)) == answer and time.monotonic() < deadline:
        time.sleep(0.2)
    assert later["counts"]["pending"] == 0 and later["counts"]["ready"] == 1
    assert later["prelabel"]["prelabeled"] == 1 and later["busy"] is False
    monkeypatch.setattr(selectors, "PROGRESS_CACHE_SECONDS", 0)
    assert selectors.live_progress(project) == later


def test_an_idle_answer_is_never_reused(project, monkeypatch):
    """The page stops polling on "not busy": a kept idle answer would hide an upload made just after."""
    monkeypatch.setattr(selectors, "PROGRESS_CACHE_SECONDS", 60)
    assert selectors.live_progress(project)["busy"] is False
    make(project, 1, status=Clip.Status.PENDING)
    answer = selectors.live_progress(project)
    assert answer["busy"] is True and answer["counts"]["pending"] == 1


# --- leases of members who leave, or who can no longer review ------------------------------------------------
def review_lease(user, clip):
    now = timezone.now()
    return ClipLease.objects.create(clip=clip, user=user, kind=ClipLease.Kind.REVIEW, acquired_at=now,
                                    expires_at=now + timedelta(minutes=10))


def test_a_removed_member_loses_their_leases_and_places_but_keeps_drafts(project, manager, annotator,
                                                                          django_user_model):
    bob = django_user_model.objects.create_user("bob", password="pw-bob-12345")
    projects.set_membership(project=project, user=bob, role=Role.ANNOTATOR)
    first, second = make(project, 1, priority=0.9), make(project, 2, priority=0.1)
    queue.claim(annotator, first)
    draft = annotating.start(annotator, first)
    review_lease(annotator, second)
    other = projects.create_project(name="Other", creator=manager)
    projects.set_membership(project=other, user=annotator, role=Role.ANNOTATOR)
    elsewhere = queue.claim(annotator, make(other, 3))

    projects.remove_membership(project=project, user=annotator, actor=manager)
    assert list(ClipLease.objects.filter(user=annotator)) == [elsewhere]  # other projects' leases stay
    assert Annotation.objects.filter(pk=draft.pk, status=Annotation.Status.DRAFT).exists()
    released = AuditEvent.objects.filter(action="lease.released", project=project)
    assert sorted((e.object_id, e.changes["kind"], e.changes["user"], e.actor_id) for e in released) == [
        (str(first.pk), "annotate", "alice", manager.pk), (str(second.pk), "review", "alice", manager.pk)]
    assert queue.next_clip(bob, project).clip == first  # the place Alice held is free again


def test_a_reviewer_demoted_to_annotator_loses_only_review_leases(project, manager, django_user_model):
    rita = django_user_model.objects.create_user("rita", password="pw-rita-12345")
    projects.set_membership(project=project, user=rita, role=Role.REVIEWER)
    reviewing, annotating_ = make(project, 1), make(project, 2)
    review_lease(rita, reviewing)
    kept = queue.claim(rita, annotating_)

    projects.set_membership(project=project, user=rita, role=Role.MANAGER, actor=manager)  # a promotion
    assert ClipLease.objects.filter(user=rita).count() == 2
    projects.set_membership(project=project, user=rita, role=Role.ANNOTATOR, actor=manager)
    assert list(ClipLease.objects.filter(user=rita)) == [kept]
    event = AuditEvent.objects.get(action="lease.released")
    assert (event.object_id, event.changes["kind"], event.changes["user"]) == (str(reviewing.pk), "review", "rita")


def test_the_admins_bulk_delete_audits_each_row_and_reindexes_once(admin_client, project,
                                                                   django_capture_on_commit_callbacks):
    from django.urls import reverse

    clip = make(project, 1)
    fused(clip, "glad")
    clip_index.index_clips([clip])
    assert index(clip) == [("happy", "joy")]
    rows = list(EmotionTerm.objects.filter(project=project, term__in=["glad", "cheerful"]).values_list("pk", flat=True))
    assert len(rows) == 2
    with django_capture_on_commit_callbacks(execute=True) as queued:
        admin_client.post(reverse("admin:annotations_emotionterm_changelist"),
                          {"action": "delete_selected", "_selected_action": rows, "post": "yes"})
    assert not EmotionTerm.objects.filter(pk__in=rows).exists()
    assert AuditEvent.objects.filter(action="vocabulary.deleted").count() == 2
    assert len(queued) == 1  # one reindex for the project, not one per row
    assert index(clip) == [("glad", "unassigned")]  # the synonym is gone: the word stands alone
