"""Managers' actions on clips: send to review (before the overlap is met, or a second look at verified work),
and one lease released or moved from the clip's history page."""

import pytest
from django.urls import reverse

from annotations.models import Annotation, AuditEvent, Clip, ClipLease, Review, Role
from annotations.services import annotating, queue, reviews
from annotations.services.projects import set_membership, update_config

pytestmark = pytest.mark.django_db


def ready_clip(project, n, priority=None):
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}", name=f"clip-{n}",
                               size_bytes=1, status=Clip.Status.READY, duration=2.0, priority=priority)


@pytest.fixture
def people(project, annotator, manager, django_user_model):
    users = {"alice": annotator, "maria": manager}
    for name, role in (("bob", Role.ANNOTATOR), ("rita", Role.REVIEWER), ("ruth", Role.REVIEWER)):
        users[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-12345")
        set_membership(project=project, user=users[name], role=role)
    return users


def submit(user, clip, labels):
    queue.claim(user, clip)
    draft = annotating.start(user, clip)
    return annotating.submit(draft, labels=labels, base_version=draft.version)


def test_a_clip_short_of_its_overlap_goes_to_review_with_what_it_has(project, people):
    update_config(project, {"annotation": {"overlap": 2}})
    clip = ready_clip(project, 1, 0.9)
    done = submit(people["alice"], clip, ["calm"])
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.IN_PROGRESS
    assert not queue.review_candidates(people["rita"], project).exists()

    outcome = queue.send_to_review(project.clips.all(), actor=people["maria"])
    assert outcome == {"sent": 1, "without_submissions": 0}
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.SUBMITTED and clip.review_requested_at is not None
    assert list(queue.review_candidates(people["rita"], project)) == [clip]
    assert not queue.annotate_candidates(people["bob"], project).exists()  # annotation is closed for now
    assert AuditEvent.objects.filter(action="clip.review_requested", object_id=str(clip.pk)).exists()

    reviews.review(done, reviewer=people["rita"], decision=Review.Decision.ACCEPT, version=done.version)
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.VERIFIED
    assert not queue.review_candidates(people["ruth"], project).exists()  # the request is met


def test_a_rejection_after_the_request_returns_the_clip_to_annotation(project, people):
    update_config(project, {"annotation": {"overlap": 2}})
    clip = ready_clip(project, 1, 0.9)
    done = submit(people["alice"], clip, ["calm"])
    queue.send_to_review(project.clips.all(), actor=people["maria"])
    reviews.review(done, reviewer=people["rita"], decision=Review.Decision.REJECT, reason="missing the smile",
                   version=done.version)
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.IN_PROGRESS
    # The author gets the returned draft back, and the second place is open again.
    assert queue.next_clip(people["alice"], project).clip == clip
    assert queue.next_clip(people["bob"], project).clip == clip


def test_a_verified_clip_gets_a_human_second_look(project, people):
    clip = ready_clip(project, 1, 0.9)
    set_membership(project=project, user=people["alice"], role=Role.ANNOTATOR, trusted=True)
    done = submit(people["alice"], clip, ["calm"])
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.VERIFIED  # accepted automatically: a trusted annotator
    assert not queue.review_candidates(people["rita"], project).exists()

    queue.send_to_review(Clip.objects.filter(pk=clip.pk), actor=people["maria"])
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.VERIFIED  # still verified while the second look waits
    assert list(queue.review_candidates(people["rita"], project)) == [clip]
    assert not queue.review_candidates(people["alice"], project).exists()  # never one's own work

    done.refresh_from_db()
    reviews.review(done, reviewer=people["rita"], decision=Review.Decision.REJECT, reason="not calm: tense",
                   version=done.version)
    clip.refresh_from_db()
    assert clip.label_state == Clip.LabelState.IN_PROGRESS  # the reject un-verifies it
    assert not queue.review_candidates(people["ruth"], project).exists()


def test_clips_without_a_submission_are_counted_apart(project, people):
    ready_clip(project, 1, 0.9)
    assert queue.send_to_review(project.clips.all(), actor=people["maria"]) == {"sent": 0, "without_submissions": 1}
    assert not project.clips.filter(review_requested_at__isnull=False).exists()


def test_the_clip_list_action_and_the_review_page(client, project, people):
    clip = ready_clip(project, 1, 0.9)
    set_membership(project=project, user=people["alice"], role=Role.ANNOTATOR, trusted=True)
    done = submit(people["alice"], clip, ["calm"])
    empty = ready_clip(project, 2, 0.5)
    client.force_login(people["maria"])
    url = reverse("annotations:clip-list", args=[project.slug])
    page = client.post(url, {"action": "review", "clip": [clip.pk, empty.pk]}, follow=True).content.decode()
    assert "Sent 1 clip to review." in page and "1 had no submitted annotation yet" in page

    client.force_login(people["rita"])
    review_page = client.get(reverse("annotations:clip-review", args=[clip.pk])).content.decode()
    assert 'name="decision"' in review_page  # the automatic accept does not count as judged
    assert "A manager sent this clip to review for a second look at verified work." in review_page
    client.post(reverse("annotations:clip-review", args=[clip.pk]),
                {"annotation": done.pk, "version": done.version, "decision": "accept"})
    assert Review.objects.filter(annotation=done, reviewer=people["rita"], automatic=False).exists()


def test_an_annotator_cannot_send_to_review(client, project, people):
    clip = ready_clip(project, 1, 0.9)
    submit(people["bob"], clip, ["calm"])
    client.force_login(people["alice"])
    response = client.post(reverse("annotations:clip-list", args=[project.slug]), {"action": "review", "clip": [clip.pk]})
    assert response.status_code == 404
    clip.refresh_from_db()
    assert clip.review_requested_at is None


# --- one lease, from the clip's history page ----------------------------------------------------------------
def test_a_manager_moves_a_lease_and_its_draft(client, project, people):
    clip = ready_clip(project, 1, 0.9)
    queue.claim(people["alice"], clip)
    draft = annotating.start(people["alice"], clip)
    annotating.save_draft(draft, labels=["calm"], base_version=draft.version)
    lease = ClipLease.objects.get(clip=clip, user=people["alice"])
    client.force_login(people["maria"])
    history = client.get(reverse("annotations:clip-history", args=[clip.pk])).content.decode()
    assert "Reassign" in history and f'<option value="{people["bob"].pk}">bob</option>' in history

    client.post(reverse("annotations:clip-lease", args=[clip.pk, lease.pk]), {"action": "reassign",
                                                                               "user": people["bob"].pk})
    assert ClipLease.objects.get(pk=lease.pk).user == people["bob"]
    assert Annotation.objects.get(pk=draft.pk).annotator == people["bob"]
    assert AuditEvent.objects.filter(action="lease.reassigned").exists()


def test_reassigning_refuses_outsiders_and_people_who_cannot_take_it(client, project, people, outsider):
    clip = ready_clip(project, 1, 0.9)
    submit(people["alice"], clip, ["calm"])
    queue.claim(people["rita"], clip, queue.REVIEW)
    lease = ClipLease.objects.get(clip=clip, user=people["rita"])
    client.force_login(people["maria"])
    url = reverse("annotations:clip-lease", args=[clip.pk, lease.pk])
    for who in (outsider, people["bob"]):  # not a member; an annotator cannot hold a review lease
        client.post(url, {"action": "reassign", "user": who.pk})
        assert ClipLease.objects.get(pk=lease.pk).user == people["rita"]
    client.post(url, {"action": "reassign", "user": people["ruth"].pk})
    assert ClipLease.objects.get(pk=lease.pk).user == people["ruth"]


def test_moving_a_review_lease_leaves_drafts_alone(project, people):
    update_config(project, {"annotation": {"overlap": 2}})
    clip = ready_clip(project, 1, 0.9)
    submit(people["alice"], clip, ["calm"])
    queue.send_to_review(project.clips.all(), actor=people["maria"])
    queue.claim(people["rita"], clip, queue.REVIEW)
    # Rita also has a draft of her own on the clip, from before it went to review.
    draft = Annotation.objects.create(clip=clip, annotator=people["rita"], labels=[{"term": "calm"}])
    lease = ClipLease.objects.get(clip=clip, user=people["rita"], kind=queue.REVIEW)
    queue.reassign(lease, people["ruth"], actor=people["maria"])
    assert Annotation.objects.get(pk=draft.pk).annotator == people["rita"]


def test_releasing_one_lease_keeps_the_others(client, project, people):
    update_config(project, {"annotation": {"overlap": 2}})
    clip = ready_clip(project, 1, 0.9)
    queue.claim(people["alice"], clip)
    queue.claim(people["bob"], clip)
    lease = ClipLease.objects.get(clip=clip, user=people["alice"])
    client.force_login(people["maria"])
    client.post(reverse("annotations:clip-lease", args=[clip.pk, lease.pk]), {"action": "release"})
    assert list(ClipLease.objects.filter(clip=clip).values_list("user__username", flat=True)) == ["bob"]


def test_only_managers_touch_leases(client, project, people):
    clip = ready_clip(project, 1, 0.9)
    queue.claim(people["alice"], clip)
    lease = ClipLease.objects.get(clip=clip, user=people["alice"])
    client.force_login(people["rita"])
    assert client.post(reverse("annotations:clip-lease", args=[clip.pk, lease.pk]),
                       {"action": "release"}).status_code == 404
    assert ClipLease.objects.filter(pk=lease.pk).exists()


def test_the_clip_list_shows_who_holds_each_clip(client, project, people):
    clip = ready_clip(project, 1, 0.9)
    queue.claim(people["alice"], clip)
    client.force_login(people["maria"])
    response = client.get(reverse("annotations:clip-list", args=[project.slug]))
    rows = response.context["rows"]
    assert rows[0][2] == [("alice", "annotate")]


def test_a_returned_draft_of_someone_who_left_holds_no_place(project, people):
    from annotations.services.projects import remove_membership

    clip = ready_clip(project, 1, 0.9)
    done = submit(people["bob"], clip, ["calm"])
    reviews.review(done, reviewer=people["rita"], decision=Review.Decision.REJECT, reason="look again",
                   version=done.version)
    assert queue.next_clip(people["alice"], project) is None  # Bob's returned draft keeps his place
    remove_membership(project=project, user=people["bob"], actor=people["maria"])
    assert queue.next_clip(people["alice"], project).clip == clip
    assert Annotation.objects.filter(pk=done.pk, status=Annotation.Status.DRAFT).exists()  # his work is kept
