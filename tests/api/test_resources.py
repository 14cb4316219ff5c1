"""Every resource read and written through the API with tokens: projects and their config, clips and their
filters, vocabulary, model versions, training runs, snapshots and exports."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import (
    AuditEvent,
    ClipLabel,
    DatasetSnapshot,
    EmotionTerm,
    Export,
    ModelVersion,
    TrainingRun,
)
from annotations.services import annotating, queue, reviews
from tests.annotations.training_fixtures import key_in

from .conftest import ready_clip

pytestmark = pytest.mark.django_db


def verified(project, n, split, annotator, reviewer, labels=("calm",)):
    clip = ready_clip(project, n, sha256=key_in(split))
    queue.claim(annotator, clip)
    draft = annotating.start(annotator, clip)
    done = annotating.submit(draft, labels=list(labels), base_version=draft.version)
    reviews.review(done, reviewer=reviewer, decision="accept")
    return clip


# --- projects ---------------------------------------------------------------------------------------------
def test_projects_list_and_detail_show_the_role_and_config_to_managers_only(api, project):
    rows = api.alice.get("/api/v1/projects/").json()
    assert rows["count"] == 1 and rows["results"][0]["role"] == "annotator"
    assert rows["results"][0]["config"] is None
    assert api.maria.get("/api/v1/projects/").json()["results"][0]["config"] == {}
    assert api.alice.get(f"/api/v1/projects/{project.slug}/").json()["config"] is None
    mine = api.maria.get(f"/api/v1/projects/{project.slug}/").json()
    assert mine["role"] == "manager" and mine["config"] == {}


def test_a_manager_changes_the_config_audited_and_a_bad_key_is_400_with_its_path(api, project):
    url = f"/api/v1/projects/{project.slug}/"
    bad = api.maria.patch(url, {"config": {"annotation": {"overlap": "two"}}}, format="json")
    assert bad.status_code == 400
    assert "config.annotation.overlap" in bad.json()["error"]
    assert any("config.annotation.overlap" in e for e in bad.json()["errors"])
    unknown = api.maria.patch(url, {"config": {"prelabel": {"nope": 1}}}, format="json")
    assert unknown.status_code == 400 and "config.prelabel.nope" in unknown.json()["error"]
    good = api.maria.patch(url, {"config": {"annotation": {"overlap": 2}}}, format="json")
    assert good.status_code == 200 and good.json()["config"] == {"annotation": {"overlap": 2}}
    project.refresh_from_db()
    assert project.config == {"annotation": {"overlap": 2}}
    event = AuditEvent.objects.filter(action="project.config_changed").get()
    assert event.actor_id == project.created_by_id and "config.annotation.overlap" in event.changes["diff"]
    assert api.maria.patch(url, {"config": "not an object"}, format="json").status_code == 400


# --- clips ------------------------------------------------------------------------------------------------
def test_clips_page_by_cursor_and_filter_with_the_managers_definition(api, project):
    clips = [ready_clip(project, n) for n in range(1, 6)]
    ClipLabel.objects.create(clip=clips[1], project=project, term="anxious", family="fear", source="model",
                             score=0.9)
    first = api.maria.get(f"/api/v1/projects/{project.slug}/clips/?page_size=2").json()
    assert [c["id"] for c in first["results"]] == [clips[4].pk, clips[3].pk]
    second = api.maria.get(first["next"].removeprefix("http://testserver")).json()
    assert [c["id"] for c in second["results"]] == [clips[2].pk, clips[1].pk]
    by_label = api.maria.get(f"/api/v1/projects/{project.slug}/clips/?label=anxious&min_score=0.5").json()
    assert [c["id"] for c in by_label["results"]] == [clips[1].pk]
    by_name = api.alice.get(f"/api/v1/projects/{project.slug}/clips/?name=clip-3").json()
    assert [c["name"] for c in by_name["results"]] == ["clip-3"]
    # annotators label independently: no filtering by labels (others' or the models')
    assert api.alice.get(f"/api/v1/projects/{project.slug}/clips/?label=anxious").status_code == 403
    assert api.rita.get(f"/api/v1/projects/{project.slug}/clips/?label=anxious").status_code == 200
    bad = api.maria.get(f"/api/v1/projects/{project.slug}/clips/?status=sleeping")
    assert bad.status_code == 400 and "status" in bad.json()["errors"]
    capped = api.maria.get(f"/api/v1/projects/{project.slug}/clips/?page_size=100000").json()
    assert len(capped["results"]) == 5  # (the cap is 500)


def test_a_clip_carries_its_facts_and_signed_links(api, project, settings):
    clip = ready_clip(project, 1, media_root=settings.MEDIA_ROOT, transcript="hello", metadata={"speaker": "s1"})
    data = api.alice.get(f"/api/v1/clips/{clip.pk}/").json()
    assert data["name"] == "clip-1" and data["project"] == project.slug and data["transcript"] == "hello"
    assert data["metadata"] == {"speaker": "s1"} and data["status"] == "ready"
    assert data["media_url"].startswith("http://testserver/media/s/") and data["thumbnail_url"] is None


# --- vocabulary -------------------------------------------------------------------------------------------
def test_vocabulary_lists_completes_and_takes_proposals(api, project):
    listed = api.alice.get(f"/api/v1/projects/{project.slug}/vocabulary/?page_size=500").json()
    assert listed["count"] == EmotionTerm.objects.filter(project=project).count() > 0
    completed = api.alice.get(f"/api/v1/projects/{project.slug}/vocabulary/?q=anx").json()["results"]
    assert completed and completed[0]["term"].startswith("anx")
    proposed = api.alice.post(f"/api/v1/projects/{project.slug}/vocabulary/", {"word": "Glumphish"},
                              format="json")
    assert proposed.status_code == 201
    assert proposed.json() == {"word": "glumphish", "term": "glumphish", "family": "unassigned",
                               "pending": True}
    assert EmotionTerm.objects.get(project=project, term="glumphish").flagged
    assert api.alice.post(f"/api/v1/projects/{project.slug}/vocabulary/", {"word": "  "},
                          format="json").status_code == 400


# --- model versions and training --------------------------------------------------------------------------
def test_model_versions_read(api, project):
    model = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:base",
                                        base_model="org/base", status="active", promoted_at=timezone.now())
    rows = api.maria.get(f"/api/v1/projects/{project.slug}/model-versions/").json()["results"]
    assert [r["name"] for r in rows] == ["internvl:base"]
    assert api.maria.get(f"/api/v1/model-versions/{model.pk}/").json()["status"] == "active"


def test_a_manager_starts_and_cancels_a_training_run(api, project, annotator, reviewer,
                                                     django_capture_on_commit_callbacks):
    for n, split in enumerate(["train", "train", "val", "test"], 1):
        verified(project, n, split, annotator, reviewer)
    url = f"/api/v1/projects/{project.slug}/training-runs/"
    refused = api.maria.post(url, {"overrides": {"epochs": "many"}}, format="json")
    assert refused.status_code == 400 and "config.training.epochs" in refused.json()["error"]
    with django_capture_on_commit_callbacks(execute=False) as sent:
        started = api.maria.post(url, {"overrides": {"epochs": 1}}, format="json")
    assert started.status_code == 201, started.json()
    assert len(sent) == 1  # the worker's task, dispatched on commit (not run here)
    run = started.json()
    assert run["status"] == "queued" and run["config"]["overrides"] == {"epochs": 1}
    assert api.maria.post(url, {}, format="json").status_code == 400  # one live run per project
    assert [r["id"] for r in api.maria.get(url).json()["results"]] == [run["id"]]
    assert api.maria.get(f"/api/v1/training-runs/{run['id']}/").json()["snapshot"] == run["snapshot"]
    cancelled = api.maria.post(f"/api/v1/training-runs/{run['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert api.maria.post(f"/api/v1/training-runs/{run['id']}/cancel/").status_code == 409
    assert TrainingRun.objects.get(pk=run["id"]).status == "cancelled"


# --- snapshots and exports --------------------------------------------------------------------------------
def test_snapshots_freeze_once_and_read(api, project, annotator, reviewer):
    url = f"/api/v1/projects/{project.slug}/snapshots/"
    empty = api.maria.post(url, {}, format="json")
    assert empty.status_code == 400 and "nothing to freeze" in empty.json()["error"]
    verified(project, 1, "train", annotator, reviewer)
    frozen = api.maria.post(url, {"name": "first"}, format="json")
    assert frozen.status_code == 201 and frozen.json()["clip_count"] == 1 and frozen.json()["name"] == "first"
    again = api.maria.post(url, {}, format="json")
    assert again.status_code == 200 and again.json()["id"] == frozen.json()["id"]  # same content, same snapshot
    assert api.maria.get(f"/api/v1/snapshots/{frozen.json()['id']}/").json()["content_hash"]
    assert api.maria.get(url).json()["count"] == 1


def test_exports_are_requested_listed_and_downloaded(api, project, annotator, reviewer, settings,
                                                    django_capture_on_commit_callbacks):
    verified(project, 1, "train", annotator, reviewer)
    snapshot = DatasetSnapshot.objects.get(pk=api.maria.post(f"/api/v1/projects/{project.slug}/snapshots/", {},
                                                             format="json").json()["id"])
    url = f"/api/v1/projects/{project.slug}/exports/"
    assert api.maria.post(url, {"snapshot": snapshot.pk, "format": "tiff"}, format="json").status_code == 400
    with django_capture_on_commit_callbacks(execute=False) as sent:
        requested = api.maria.post(url, {"snapshot": snapshot.pk, "format": "merov-csv"}, format="json")
    assert requested.status_code == 202, requested.json()
    assert len(sent) == 1
    body = requested.json()
    assert body["format_name"] == "merov-csv" and body["status"] == "queued" and body["download_url"] is None
    # asking again for the same snapshot, format and options finds the same export
    assert api.maria.post(url, {"snapshot": snapshot.pk, "format": "merov-csv"}, format="json").json()["id"] == \
        body["id"]
    assert [e["id"] for e in api.maria.get(url).json()["results"]] == [body["id"]]
    # built (as a worker would): the download links appear, and the API's serves the zip to the token
    (settings.MEDIA_ROOT / "exports").mkdir(parents=True, exist_ok=True)
    (settings.MEDIA_ROOT / "exports" / "e.zip").write_bytes(b"PK zip bytes")
    Export.objects.filter(pk=body["id"]).update(status="done", file="exports/e.zip", finished_at=timezone.now(),
                                                expires_at=timezone.now() + timedelta(days=1))
    done = api.maria.get(f"/api/v1/exports/{body['id']}/").json()
    assert done["download_url"].endswith(f"/p/{project.slug}/exports/{body['id']}/download")
    response = api.maria.get(done["api_download_url"].removeprefix("http://testserver"))
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"PK zip bytes"
    Export.objects.filter(pk=body["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api.maria.get(f"/api/v1/exports/{body['id']}/download/").status_code == 410
    assert api.rita.get(f"/api/v1/exports/{body['id']}/").status_code == 403
