"""The annotation and review pages over HTTP: access, the JSON calls, CSP and escaping."""

import json
import re

import pytest
from django.urls import reverse

from annotations.models import Annotation, Clip, ClipLease, Prediction, Review, Role
from annotations.services.projects import create_project, set_membership

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)>"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)


def ready_clip(project, n, **extra):
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}", name=f"clip-{n}",
                               size_bytes=1, status=Clip.Status.READY, duration=2.0, **extra)


@pytest.fixture
def reviewer(project, django_user_model):
    user = django_user_model.objects.create_user("rita", password="pw-rita-123456")
    set_membership(project=project, user=user, role=Role.REVIEWER)
    return user


def post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_outsiders_get_404_everywhere(client, project, outsider, annotator):
    clip = ready_clip(project, 1)
    client.force_login(annotator)
    client.get(reverse("annotations:clip-annotate", args=[clip.pk]))
    client.force_login(outsider)
    for name in ("clip-annotate", "clip-history", "clip-review"):
        assert client.get(reverse(f"annotations:{name}", args=[clip.pk])).status_code == 404, name
    for name in ("clip-draft", "clip-submit", "clip-heartbeat", "clip-skip"):
        assert client.post(reverse(f"annotations:{name}", args=[clip.pk])).status_code == 404, name
    for name in ("work", "vocabulary"):
        assert client.get(reverse(f"annotations:{name}", args=[project.slug])).status_code == 404, name
    assert client.post(reverse("annotations:next-clip", args=[project.slug])).status_code == 404


def test_an_annotator_cannot_open_the_review_page(client, project, annotator):
    clip = ready_clip(project, 1)
    client.force_login(annotator)
    assert client.get(reverse("annotations:clip-review", args=[clip.pk])).status_code == 404


def test_the_clip_page_sends_a_strict_csp_and_no_inline_script(client, project, annotator):
    clip = ready_clip(project, 1, transcript=HOSTILE)
    client.force_login(annotator)
    response = client.get(reverse("annotations:clip-annotate", args=[clip.pk]))
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    html = response.content.decode()
    assert not INLINE_SCRIPT.search(html)
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_labels_and_transcripts_are_escaped_on_every_page(client, project, annotator, reviewer):
    clip = ready_clip(project, 1, transcript=HOSTILE,
                      metadata={"transcript_segments": [[0.0, 1.0, HOSTILE]]})
    Prediction.objects.create(clip=clip, backend="fused", model_version="fused:x",
                              labels=[{"term": HOSTILE, "score": 0.5, "support": [{"backend": "internvl", "score": 0.5}]}])
    a = Annotation.objects.create(clip=clip, annotator=annotator, labels=[{"term": HOSTILE, "note": HOSTILE}])
    client.force_login(annotator)
    body = {"labels": [{"term": HOSTILE, "note": HOSTILE}], "version": a.version, "key": "k"}
    assert post_json(client, reverse("annotations:clip-submit", args=[clip.pk]), body).status_code == 200
    pages = [reverse("annotations:clip-annotate", args=[clip.pk]), reverse("annotations:clip-history", args=[clip.pk]),
             reverse("annotations:work", args=[project.slug])]
    for url in pages:
        html = client.get(url).content.decode()
        assert HOSTILE not in html, url
    client.force_login(reviewer)
    html = client.get(reverse("annotations:clip-review", args=[clip.pk])).content.decode()
    assert HOSTILE not in html and "&lt;img" in html


def test_draft_saves_conflicts_and_bad_input(client, project, annotator):
    clip = ready_clip(project, 1)
    client.force_login(annotator)
    page = client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
    data = json.loads(re.search(r'<script id="clip-data" type="application/json">(.*?)</script>',
                                page.content.decode(), re.S).group(1))
    assert data["editable"] and data["annotation"]["version"] == 1
    url = reverse("annotations:clip-draft", args=[clip.pk])
    ok = post_json(client, url, {"labels": [{"term": "calm", "evidence": ["voice"]}], "version": 1, "lead_time": 3})
    assert ok.status_code == 200 and ok.json()["annotation"]["version"] == 2
    stale = post_json(client, url, {"labels": ["angry"], "version": 1})
    assert stale.status_code == 409 and stale.json()["stored"]["labels"][0]["term"] == "calm"
    bad = post_json(client, url, {"labels": [{"term": "calm", "evidence": ["smell"]}], "version": 2})
    assert bad.status_code == 400 and "evidence" in bad.json()["error"]
    assert client.post(url, "not json", content_type="application/json").status_code == 400


def test_submit_is_applied_once_and_leads_to_the_next_clip(client, project, annotator):
    clip, other = ready_clip(project, 1), ready_clip(project, 2)
    client.force_login(annotator)
    client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
    url = reverse("annotations:clip-submit", args=[clip.pk])
    first = post_json(client, url, {"labels": ["calm"], "version": 1, "key": "same-key"})
    retry = post_json(client, url, {"labels": ["calm"], "version": 1, "key": "same-key"})
    assert first.status_code == retry.status_code == 200
    assert first.json()["annotation"]["version"] == retry.json()["annotation"]["version"] == 2
    again = post_json(client, url, {"labels": ["calm"], "version": 1, "key": "another-key"})
    assert again.status_code == 409
    # The submit claimed the next clip already; the retry resumed that claim, not a second one.
    assert first.json()["next"] == retry.json()["next"] == reverse("annotations:clip-annotate",
                                                                      args=[other.pk]) + "?take=1"
    assert list(ClipLease.objects.filter(user=annotator).values_list("clip_id", flat=True)) == [other.pk]
    client.get(first.json()["next"])
    last = post_json(client, reverse("annotations:clip-submit", args=[other.pk]), {"labels": ["calm"], "version": 1})
    assert last.json()["next"] == reverse("annotations:work", args=[project.slug])  # the queue is empty


def test_skip_needs_a_reason(client, project, annotator):
    clip = ready_clip(project, 1)
    client.force_login(annotator)
    client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
    response = client.post(reverse("annotations:clip-skip", args=[clip.pk]), {"reason": ""}, follow=True)
    assert "Say why you skip this clip." in response.content.decode()
    response = client.post(reverse("annotations:clip-skip", args=[clip.pk]), {"reason": "no face"})
    assert response.status_code == 302 and clip.skips.get().reason == "no face"


def test_autocomplete_finds_the_canonical_term_and_new_words_wait_for_managers(client, project, annotator):
    client.force_login(annotator)
    results = client.get(reverse("annotations:vocabulary", args=[project.slug]), {"q": "anx"}).json()["results"]
    assert results and results[0]["term"] == "anxious" and results[0]["family"]
    response = post_json(client, reverse("annotations:vocabulary-propose", args=[project.slug]), {"word": "zorbish"})
    assert response.status_code == 200 and response.json() == {"word": "zorbish", "term": "zorbish",
                                                                "family": "unassigned", "pending": True}


def test_a_reviewer_rejects_one_annotation_and_accepts_another(client, project, annotator, reviewer,
                                                               django_user_model):
    from annotations.services.projects import update_config

    update_config(project, {"annotation": {"overlap": 2}})
    bob = django_user_model.objects.create_user("bob", password="pw-bob-1234567")
    set_membership(project=project, user=bob, role=Role.ANNOTATOR)
    clip = ready_clip(project, 1)
    for user, label in ((annotator, "bored"), (bob, "amused")):
        client.force_login(user)
        client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
        assert post_json(client, reverse("annotations:clip-submit", args=[clip.pk]),
                         {"labels": [label], "version": 1, "key": label}).status_code == 200
    client.force_login(reviewer)
    page = client.get(reverse("annotations:clip-review", args=[clip.pk]))
    assert page.status_code == 200 and "bored" in page.content.decode() and "amused" in page.content.decode()
    alice_a = Annotation.objects.get(clip=clip, annotator=annotator)
    bob_a = Annotation.objects.get(clip=clip, annotator=bob)
    url = reverse("annotations:clip-review", args=[clip.pk])
    client.post(url, {"annotation": alice_a.pk, "version": alice_a.version, "decision": "reject",
                      "reason": "she is amused"})
    client.post(url, {"annotation": bob_a.pk, "version": bob_a.version, "decision": "accept"})
    alice_a.refresh_from_db()
    assert alice_a.status == Annotation.Status.DRAFT
    assert Review.objects.filter(annotation=bob_a, decision="accept").exists()
    # Alice sees the reason at the top of her clip.
    client.force_login(annotator)
    html = client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1").content.decode()
    assert "Returned by rita" in html and "she is amused" in html


def test_a_project_of_another_team_is_invisible(client, project, annotator, django_user_model):
    owner = django_user_model.objects.create_user("olga", password="pw-olga-12345")
    other = create_project(name="Other team", creator=owner)
    clip = ready_clip(other, 9)
    client.force_login(annotator)
    assert client.get(reverse("annotations:clip-annotate", args=[clip.pk])).status_code == 404
    assert client.get(reverse("annotations:vocabulary", args=[other.slug]), {"q": "a"}).status_code == 404


def test_opening_a_clip_from_a_list_is_a_preview_that_takes_no_place(client, project, manager, annotator):
    from annotations.models import ClipLease

    clip = ready_clip(project, 1)
    client.force_login(manager)
    page = client.get(reverse("annotations:clip-annotate", args=[clip.pk])).content.decode()
    assert "Annotate this clip" in page and not ClipLease.objects.exists() and not Annotation.objects.exists()
    client.force_login(annotator)
    assert client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1").status_code == 200
    assert ClipLease.objects.filter(user=annotator).exists()
    # Others' work stays hidden from an annotator until they have submitted their own.
    assert client.get(reverse("annotations:clip-history", args=[clip.pk])).status_code == 404


def test_a_write_without_a_place_keeps_the_draft_and_says_so(client, project, annotator, django_user_model):
    from annotations.models import ClipLease
    from annotations.services import queue

    bob = django_user_model.objects.create_user("bob", password="pw-bob-1234567")
    set_membership(project=project, user=bob, role=Role.ANNOTATOR)
    clip = ready_clip(project, 1)
    client.force_login(annotator)
    client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
    ClipLease.objects.filter(user=annotator).delete()  # a manager released it; Bob took the place
    queue.claim(bob, clip)
    for name in ("clip-draft", "clip-submit"):
        response = post_json(client, reverse(f"annotations:{name}", args=[clip.pk]),
                             {"labels": ["calm"], "version": 1, "key": "k"})
        assert response.status_code == 409 and response.json()["code"] == "lease", name
    a = Annotation.objects.get(annotator=annotator)
    assert a.status == "draft" and a.labels == [] and a.version == 1


def test_garbage_numbers_are_400s_not_500s(client, project, annotator, manager):
    clip = ready_clip(project, 1)
    client.force_login(annotator)
    client.get(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
    url = reverse("annotations:clip-draft", args=[clip.pk])
    assert client.post(url, '{"labels": [], "version": 1e400}', content_type="application/json").status_code == 400
    ok = client.post(url, '{"labels": ["calm"], "version": 1, "lead_time": NaN}', content_type="application/json")
    assert ok.status_code == 200 and Annotation.objects.get(annotator=annotator).lead_time == 0
    client.force_login(manager)
    listing = reverse("annotations:clip-list", args=[project.slug])
    assert client.get(listing, {"after": "²"}).status_code == 200
    assert client.post(listing, {"action": "release", "clip": ["²"]}).status_code == 302
