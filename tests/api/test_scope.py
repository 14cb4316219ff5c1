"""The membership rule with tokens: a user of one project gets 404 for everything of another, whatever the
resource and method, and a role too low inside one's own project gets 403."""

import pytest
from django.utils import timezone

from annotations.models import (
    Annotation,
    DatasetSnapshot,
    Export,
    ModelVersion,
    Prediction,
    Review,
    TrainingRun,
)

from .conftest import ready_clip

pytestmark = pytest.mark.django_db


@pytest.fixture
def theirs(other_project, outsider):
    """One of everything in Elsewhere (oscar's project), to be reached from Interviews."""
    clip = ready_clip(other_project, 1)
    annotation = Annotation.objects.create(clip=clip, annotator=outsider, labels=[{"term": "calm"}],
                                           status=Annotation.Status.SUBMITTED, submitted_at=timezone.now())
    Review.objects.create(annotation=annotation, reviewer=outsider, decision="accept", annotation_version=1)
    Prediction.objects.create(clip=clip, backend="fused", model_version="m1", labels=[{"term": "calm"}])
    model = ModelVersion.objects.create(project=other_project, backend="internvl", name="internvl:x",
                                        base_model="org/x")
    snapshot = DatasetSnapshot.objects.create(project=other_project, name="s1", content_hash="a" * 64)
    run = TrainingRun.objects.create(project=other_project, snapshot=snapshot)
    export = Export.objects.create(snapshot=snapshot, format=Export.Format.MEROV_CSV)
    return {"project": other_project, "clip": clip, "annotation": annotation, "model": model,
            "snapshot": snapshot, "run": run, "export": export}


def test_a_member_of_one_project_gets_404_for_everything_of_another(api, theirs):
    slug, clip = theirs["project"].slug, theirs["clip"].pk
    base = "/api/v1"
    gets = [f"{base}/projects/{slug}/", f"{base}/projects/{slug}/clips/", f"{base}/projects/{slug}/predictions/",
            f"{base}/projects/{slug}/vocabulary/", f"{base}/projects/{slug}/vocabulary/?q=ca",
            f"{base}/projects/{slug}/model-versions/", f"{base}/projects/{slug}/training-runs/",
            f"{base}/projects/{slug}/snapshots/", f"{base}/projects/{slug}/exports/",
            f"{base}/clips/{clip}/", f"{base}/clips/{clip}/predictions/", f"{base}/clips/{clip}/annotation/",
            f"{base}/clips/{clip}/reviews/", f"{base}/clips/{clip}/submissions/",
            f"{base}/model-versions/{theirs['model'].pk}/", f"{base}/training-runs/{theirs['run'].pk}/",
            f"{base}/snapshots/{theirs['snapshot'].pk}/", f"{base}/exports/{theirs['export'].pk}/"]
    writes = [("patch", f"{base}/projects/{slug}/", {"config": {}}),
              ("post", f"{base}/projects/{slug}/clips/", {"path": "x.mp4"}),
              ("post", f"{base}/projects/{slug}/vocabulary/", {"word": "smug"}),
              ("post", f"{base}/projects/{slug}/training-runs/", {}),
              ("post", f"{base}/projects/{slug}/snapshots/", {}),
              ("post", f"{base}/projects/{slug}/exports/", {"snapshot": theirs["snapshot"].pk, "format": "merov-csv"}),
              ("post", f"{base}/clips/{clip}/annotation/", {}),
              ("put", f"{base}/clips/{clip}/annotation/", {"labels": ["calm"], "version": 1}),
              ("post", f"{base}/clips/{clip}/annotation/submit/", {"labels": ["calm"], "version": 1}),
              ("post", f"{base}/clips/{clip}/reviews/", {"annotation": theirs["annotation"].pk, "version": 1,
                                                        "decision": "accept"}),
              ("post", f"{base}/training-runs/{theirs['run'].pk}/cancel/", {})]
    for who in (api.maria, api.alice, api.rita):  # every role of Interviews, with a token
        for url in gets:
            assert who.get(url).status_code == 404, url
        for method, url, body in writes:
            assert getattr(who, method)(url, body, format="json").status_code == 404, (method, url)
    # ... while its own manager reaches all of it with the same requests.
    for url in gets[:10] + gets[14:]:
        assert api.oscar.get(url).status_code == 200, url
    # and the project list shows only one's own projects
    assert [p["slug"] for p in api.maria.get(f"{base}/projects/").json()["results"]] == ["interviews"]
    assert [p["slug"] for p in api.oscar.get(f"{base}/projects/").json()["results"]] == ["elsewhere"]


def test_a_role_too_low_inside_ones_project_gets_403(api, project):
    clip = ready_clip(project, 1)
    slug = project.slug
    assert api.alice.get(f"/api/v1/projects/{slug}/clips/").status_code == 200
    for url in (f"/api/v1/projects/{slug}/training-runs/", f"/api/v1/projects/{slug}/snapshots/",
                f"/api/v1/projects/{slug}/exports/", f"/api/v1/projects/{slug}/model-versions/",
                f"/api/v1/projects/{slug}/predictions/", f"/api/v1/clips/{clip.pk}/reviews/"):
        assert api.alice.get(url).status_code == 403, url
    assert api.rita.get(f"/api/v1/projects/{slug}/predictions/").status_code == 200
    assert api.rita.get(f"/api/v1/projects/{slug}/snapshots/").status_code == 403
    assert api.alice.patch(f"/api/v1/projects/{slug}/", {"config": {}}, format="json").status_code == 403
    assert api.alice.post(f"/api/v1/projects/{slug}/clips/", {"path": "x.mp4"}, format="json").status_code == 404


def test_without_credentials_nothing_is_served(client, project):
    assert client.get("/api/v1/projects/").status_code in (401, 403)
    response = client.get("/api/v1/projects/", HTTP_AUTHORIZATION="Token not-a-token")
    assert response.status_code == 401
