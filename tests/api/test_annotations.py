"""Annotating and reviewing through the API: the clip page's services, its 409 and its idempotent submit."""

import pytest

from annotations.models import Annotation, AnnotationRevision, Prediction, Review

from .conftest import ready_clip

pytestmark = pytest.mark.django_db


def url(clip, tail=""):
    return f"/api/v1/clips/{clip.pk}/annotation/{tail}"


def test_start_save_and_submit(api, project):
    clip = ready_clip(project, 1)
    assert api.alice.get(url(clip)).status_code == 404  # nothing started yet
    started = api.alice.post(url(clip))
    assert started.status_code == 200
    state = started.json()
    assert state["status"] == "draft" and state["version"] == 1
    saved = api.alice.put(url(clip), {"labels": ["anxious", {"term": "tense", "evidence": ["face"]}],
                                      "version": 1}, format="json")
    assert saved.status_code == 200, saved.json()
    assert saved.json()["version"] == 2
    assert [lab["term"] for lab in saved.json()["labels"]] == ["anxious", "tense"]
    assert saved.json()["labels"][0]["source"] == "human"  # the server decides the source
    done = api.alice.post(url(clip, "submit/"), {"labels": ["anxious"], "version": 2, "key": "k-1"}, format="json")
    assert done.status_code == 200
    assert done.json()["status"] == "submitted" and done.json()["version"] == 3
    assert api.alice.get(url(clip)).json()["status"] == "submitted"


def test_a_stale_version_is_409_with_the_stored_annotation(api, project):
    clip = ready_clip(project, 1)
    api.alice.post(url(clip))
    assert api.alice.put(url(clip), {"labels": ["calm"], "version": 1}, format="json").status_code == 200
    stale = api.alice.put(url(clip), {"labels": ["angry"], "version": 1}, format="json")
    assert stale.status_code == 409
    assert stale.json()["stored"]["version"] == 2
    assert stale.json()["stored"]["labels"][0]["term"] == "calm"
    stale_submit = api.alice.post(url(clip, "submit/"), {"labels": ["angry"], "version": 1}, format="json")
    assert stale_submit.status_code == 409
    assert Annotation.objects.get(clip=clip).labels[0]["term"] == "calm"


def test_submit_is_idempotent_per_key(api, project):
    clip = ready_clip(project, 1)
    api.alice.post(url(clip))
    body = {"labels": ["joyful"], "version": 1, "key": "retry-me"}
    first = api.alice.post(url(clip, "submit/"), body, format="json")
    again = api.alice.post(url(clip, "submit/"), body, format="json")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert AnnotationRevision.objects.filter(annotation__clip=clip).count() == 1
    # without the key, a second submit of the same version is a conflict, not a second submission
    assert api.alice.post(url(clip, "submit/"), {**body, "key": "other"}, format="json").status_code == 409


def test_bad_labels_are_400_with_the_services_message(api, project):
    clip = ready_clip(project, 1)
    api.alice.post(url(clip))
    response = api.alice.post(url(clip, "submit/"), {"labels": [], "version": 1}, format="json")
    assert response.status_code == 400
    assert "at least one label" in response.json()["error"]
    response = api.alice.put(url(clip), {"labels": [{"term": "x", "evidence": ["smell"]}], "version": 1},
                             format="json")
    assert response.status_code == 400 and "evidence" in response.json()["error"]
    assert api.alice.put(url(clip), {"labels": ["calm"]}, format="json").json()["error"].startswith("version")


def test_reviewers_accept_reject_and_fix(api, project, annotator, reviewer):
    clips = [ready_clip(project, n) for n in (1, 2, 3)]
    for clip in clips:
        api.alice.post(url(clip))
        api.alice.post(url(clip, "submit/"), {"labels": ["calm"], "version": 1}, format="json")
    waiting = api.rita.get(f"/api/v1/clips/{clips[0].pk}/submissions/").json()
    assert [(a["annotator"], a["version"]) for a in waiting] == [(annotator.pk, 2)]
    annotation = waiting[0]["id"]

    def review(clip, annotation, **body):
        return api.rita.post(f"/api/v1/clips/{clip.pk}/reviews/", {"annotation": annotation, "version": 2, **body},
                             format="json")

    accepted = review(clips[0], annotation, decision="accept")
    assert accepted.status_code == 201 and accepted.json()["decision"] == "accept"
    assert review(clips[0], annotation, decision="accept").status_code == 409  # already reviewed
    second = Annotation.objects.get(clip=clips[1]).pk
    assert review(clips[1], second, decision="reject").status_code == 400  # a reject needs a reason
    assert review(clips[1], second, decision="reject", reason="not calm at all").status_code == 201
    assert Annotation.objects.get(pk=second).status == "draft"
    third = Annotation.objects.get(clip=clips[2]).pk
    fixed = review(clips[2], third, decision="fix", labels=["serene"])
    assert fixed.status_code == 201 and fixed.json()["fixed_labels"][0]["term"] == "serene"
    assert Review.objects.count() == 3
    listed = api.rita.get(f"/api/v1/clips/{clips[2].pk}/reviews/").json()
    assert [r["decision"] for r in listed] == ["fix"]
    # an annotator may not review
    assert api.alice.post(f"/api/v1/clips/{clips[0].pk}/reviews/", {}, format="json").status_code == 403


def test_nobody_reviews_their_own_annotation(api, project, reviewer):
    clip = ready_clip(project, 1)
    api.rita.post(url(clip))
    done = api.rita.post(url(clip, "submit/"), {"labels": ["calm"], "version": 1}, format="json").json()
    response = api.rita.post(f"/api/v1/clips/{clip.pk}/reviews/",
                             {"annotation": done["id"], "version": done["version"], "decision": "accept"},
                             format="json")
    assert response.status_code == 403


def test_predictions_per_clip_and_per_project(api, project):
    from tests.annotations.training_fixtures import key_in

    clip = ready_clip(project, 1, sha256=key_in("train"))
    blind = ready_clip(project, 2, sha256=key_in("test"))
    Prediction.objects.create(clip=blind, backend="fused", model_version="fused:1", labels=[{"term": "sad"}])
    Prediction.objects.create(clip=clip, backend="fused", model_version="fused:1", labels=[{"term": "calm"}])
    Prediction.objects.create(clip=clip, backend="internvl", model_version="internvl:1", labels=[{"term": "calm"}])
    rows = api.rita.get(f"/api/v1/clips/{clip.pk}/predictions/").json()["results"]
    assert {r["backend"] for r in rows} == {"fused", "internvl"}
    seen_by_alice = api.alice.get(f"/api/v1/clips/{clip.pk}/predictions/").json()["results"]
    assert len(seen_by_alice) == 2
    # a test-split clip is blind for annotators (the model's measured quality must not anchor them)
    assert api.alice.get(f"/api/v1/clips/{blind.pk}/predictions/").json()["results"] == []
    assert len(api.rita.get(f"/api/v1/clips/{blind.pk}/predictions/").json()["results"]) == 1
    project_rows = api.rita.get(f"/api/v1/projects/{project.slug}/predictions/?backend=fused").json()["results"]
    assert [(r["clip"], r["model_version"]) for r in project_rows] == [(clip.pk, "fused:1"), (blind.pk, "fused:1")]
