"""What the server decides about an annotation whatever the client says: how much work time a save adds
(bounded by the wall time the annotator really had the clip), and where each label came from (model or
human)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import Annotation, AnnotationRevision, Clip, ClipLease, Prediction, Review, Role
from annotations.services import annotating, queue, reviews
from annotations.services.projects import set_membership, update_config

pytestmark = pytest.mark.django_db


@pytest.fixture
def clip(project):
    """A clip outside the test split (test clips are always blind)."""
    from annotations import selectors

    for n in range(1, 100):
        clip = Clip(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}", name=f"clip-{n}",
                    size_bytes=1, status=Clip.Status.READY, duration=2.0)
        if selectors.clip_split(clip) != "test":
            clip.save()
            return clip
    raise AssertionError("no clip outside the test split")


@pytest.fixture
def draft(clip, annotator):
    queue.claim(annotator, clip)
    return annotating.start(annotator, clip)


def backdate(annotation, *, written=None, claimed=None):
    """Move the draft's last write and its author's claim on the clip into the past."""
    now = timezone.now()
    if written is not None:
        Annotation.objects.filter(pk=annotation.pk).update(updated_at=now - timedelta(seconds=written))
    if claimed is not None:
        ClipLease.objects.filter(clip=annotation.clip, user=annotation.annotator).update(
            acquired_at=now - timedelta(seconds=claimed))
    annotation.refresh_from_db()


# --- lead time ----------------------------------------------------------------------------------------------
def test_a_save_adds_the_focus_the_client_reports_when_that_much_time_has_passed(draft):
    backdate(draft, written=120, claimed=120)
    saved = annotating.save_draft(draft, labels=["calm"], base_version=draft.version, lead_time=45)
    assert saved.lead_time == 45


def test_a_client_cannot_report_more_time_than_passed_since_the_claim(draft):
    backdate(draft, written=60, claimed=60)
    saved = annotating.save_draft(draft, labels=["calm"], base_version=draft.version, lead_time=600)
    assert 59 <= saved.lead_time <= 62  # a minute since the claim, not the ten claimed
    # An immediate second save has had no time to add: the first one already took the minute.
    again = annotating.save_draft(saved, labels=["calm", "tense"], base_version=saved.version, lead_time=600)
    assert again.lead_time - saved.lead_time < 2
    done = annotating.submit(again, labels=["calm"], base_version=again.version, lead_time=900)
    assert done.lead_time < 66
    assert AnnotationRevision.objects.get(annotation=done).lead_time == done.lead_time


def test_a_long_held_draft_counts_only_from_its_last_save(draft):
    """Hours since the claim do not let a client bank credit: each save counts from the one before."""
    backdate(draft, written=30, claimed=3 * 3600)
    saved = annotating.save_draft(draft, labels=["calm"], base_version=draft.version, lead_time=600)
    assert 29 <= saved.lead_time <= 32


def test_a_returned_draft_counts_from_its_return(clip, draft, manager, django_user_model):
    reviewer = django_user_model.objects.create_user("rita", password="pw-rita-12345")
    set_membership(project=clip.project, user=reviewer, role=Role.REVIEWER, actor=manager)
    backdate(draft, written=3 * 3600, claimed=3 * 3600)
    done = annotating.submit(draft, labels=["calm"], base_version=draft.version, lead_time=120)
    assert done.lead_time == 120
    reviews.review(done, reviewer=reviewer, decision=Review.Decision.REJECT, reason="she is amused, not calm")
    returned = Annotation.objects.get(pk=done.pk)
    assert returned.status == Annotation.Status.DRAFT
    # Her draft was last written hours ago and her claim (moved back here) is old: only the 30 s since the
    # reviewer returned the work count.
    Review.objects.filter(annotation=returned).update(created_at=timezone.now() - timedelta(seconds=30))
    Annotation.objects.filter(pk=returned.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    ClipLease.objects.create(clip=clip, user=returned.annotator, kind="annotate",
                             acquired_at=timezone.now() - timedelta(hours=1),
                             expires_at=timezone.now() + timedelta(minutes=30))
    saved = annotating.save_draft(returned, labels=["amused"], base_version=returned.version, lead_time=600)
    assert 120 + 29 <= saved.lead_time <= 120 + 32


# --- label sources ------------------------------------------------------------------------------------------
def suggest(clip, *terms):
    Prediction.objects.create(clip=clip, backend="fused", model_version="fused:x",
                              labels=[{"term": t, "score": 0.8} for t in terms])


def test_a_label_is_the_models_when_it_was_among_the_suggestions_shown_whatever_the_client_says(clip, draft):
    suggest(clip, "happy", "anxious")
    labels = [{"term": "Glad", "source": "human"},                 # a synonym of the suggested "happy"
              {"term": "anxiety", "source": "made-up", "evidence": ["face"]},  # a word form of "anxious"
              {"term": "bored", "source": "model"}]                # never suggested
    saved = annotating.save_draft(draft, labels=labels, base_version=draft.version)
    assert saved.labels == [{"term": "Glad", "source": "model", "note": "", "evidence": []},
                            {"term": "anxiety", "source": "model", "note": "", "evidence": ["face"]},
                            {"term": "bored", "source": "human", "note": "", "evidence": []}]
    done = annotating.submit(saved, labels=[{"term": "happy", "source": "human"}, "calm"],
                             base_version=saved.version)
    assert [(lab["term"], lab["source"]) for lab in done.labels] == [("happy", "model"), ("calm", "human")]
    assert AnnotationRevision.objects.get(annotation=done).labels == done.labels


def test_labels_of_a_blind_clip_are_all_human(project, clip, draft):
    suggest(clip, "happy")
    update_config(project, {"annotation": {"suggestions": "hide"}})
    saved = annotating.save_draft(draft, labels=[{"term": "happy", "source": "model"}],
                                  base_version=draft.version)
    assert saved.labels[0]["source"] == "human"


def test_preselected_suggestions_start_as_the_models(project, clip, annotator):
    suggest(clip, "happy")
    update_config(project, {"annotation": {"suggestions": "preselect"}})
    queue.claim(annotator, clip)
    draft = annotating.start(annotator, clip)
    assert draft.labels == [{"term": "happy", "source": "model", "note": "", "evidence": []}]
