"""The per-project ML backend Label Studio calls (/ls/<slug>/...): HTTP Basic auth for the project's managers
only, 404 for other projects, /predict from stored predictions (no model runs), /webhook starting a run."""

import base64
import hashlib
from types import SimpleNamespace

import pytest
from django.urls import reverse

from annotations.models import Clip, LabelStudioTask, Prediction, Role
from annotations.services import projects, training

pytestmark = pytest.mark.django_db

PASSWORD = "pw-maria-123"  # the manager fixture's


def basic(username, password):
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def url(name, project):
    return reverse(f"annotations:{name}", args=[project.slug])


@pytest.fixture
def clip(project):
    clip = Clip.objects.create(project=project, name="c1", file="clips/c1.mp4", original_name="c1.mp4",
                               sha256=hashlib.sha256(b"c1").hexdigest(), size_bytes=10,
                               status=Clip.Status.READY, duration=2.0)
    Prediction.objects.create(clip=clip, backend="internvl", model_version="internvl:v1",
                              labels=[{"term": "sad", "score": 0.4}])
    Prediction.objects.create(clip=clip, backend="fused", model_version="fused:v7",
                              labels=[{"term": "happy", "score": 0.8}, {"term": "blorp", "score": 0.6}])
    LabelStudioTask.objects.create(clip=clip, ls_project=3, task_id=41)
    return clip


def test_health_answers_up_to_a_manager(client, project, manager):
    response = client.get(url("ls-health", project), **basic("maria", PASSWORD))
    assert response.status_code == 200
    assert response.json()["status"] == "UP"
    assert client.get(url("ls-root", project), **basic("maria", PASSWORD)).json()["status"] == "UP"


@pytest.mark.parametrize("headers", [{}, basic("maria", "wrong"), {"HTTP_AUTHORIZATION": "Basic !!!"},
                                     {"HTTP_AUTHORIZATION": "Bearer abc"}, basic("nobody", "x")])
def test_without_good_credentials_every_route_is_401_with_a_challenge(client, project, manager, headers):
    for name, method in (("ls-health", "get"), ("ls-setup", "post"), ("ls-predict", "post"),
                         ("ls-webhook", "post")):
        kwargs = {"data": "{}", "content_type": "application/json"} if method == "post" else {}
        response = getattr(client, method)(url(name, project), **kwargs, **headers)
        assert response.status_code == 401, name
        assert response["WWW-Authenticate"].startswith("Basic realm=")


def test_another_project_or_a_non_manager_gets_404(client, project, manager, annotator, django_user_model):
    other = projects.create_project(name="Other", creator=django_user_model.objects.create_user("olga"))
    assert client.get(url("ls-health", other), **basic("maria", PASSWORD)).status_code == 404
    assert client.get(reverse("annotations:ls-health", args=["no-such"]), **basic("maria", PASSWORD)).status_code == 404
    # A member who is no manager cannot connect the project's model either.
    assert client.get(url("ls-health", project), **basic("alice", "pw-alice-123")).status_code == 404
    projects.set_membership(project=project, user=annotator, role=Role.MANAGER, actor=manager)
    assert client.get(url("ls-health", project), **basic("alice", "pw-alice-123")).status_code == 200


def test_predict_answers_from_stored_predictions(client, project, manager, clip, monkeypatch):
    import ml.vocabulary  # noqa: F401  (the torch-free parts are fine; a model must not load)

    def no_models(*args, **kwargs):
        raise AssertionError("the web process must not run a model")

    monkeypatch.setattr("annotations.services.prelabel_run.fuse_and_score", no_models)
    body = {"tasks": [{"id": 41, "data": {"video": "x"}},
                      {"id": 99, "data": {"affectloop_clip": clip.pk}},
                      {"id": 100, "data": {}}],
            "project": "3.1700000000", "label_config": "<View/>", "params": {"context": None}}
    response = client.post(url("ls-predict", project), data=body, content_type="application/json",
                           **basic("maria", PASSWORD))
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    assert results[0]["model_version"] == "fused:v7" and results[0]["score"] == pytest.approx(0.7)
    assert results[0]["result"][0] == {"from_name": "emotions", "to_name": "transcript", "type": "taxonomy",
                                       "value": {"taxonomy": [["joy", "happy"]]}}
    assert results[0]["result"][1]["value"] == {"text": ["blorp"]}
    assert results[1] == results[0]  # found by our key in the task's data
    assert results[2]["result"] == []


def test_predict_never_shows_another_projects_clip(client, project, manager, clip, django_user_model):
    other = projects.create_project(name="Other", creator=manager)
    body = {"tasks": [{"id": 41, "data": {"affectloop_clip": clip.pk}}]}
    response = client.post(url("ls-predict", other), data=body, content_type="application/json",
                           **basic("maria", PASSWORD))
    assert response.status_code == 200 and response.json()["results"][0]["result"] == []


def test_setup_names_the_model_version(client, project, manager, clip):
    response = client.post(url("ls-setup", project), data={"project": "3.1", "schema": "<View/>"},
                           content_type="application/json", **basic("maria", PASSWORD))
    assert response.status_code == 200 and response.json() == {"model_version": "fused:v7"}


def test_posts_take_json_only(client, project, manager):
    response = client.post(url("ls-webhook", project), data={"action": "START_TRAINING"},
                           **basic("maria", PASSWORD))  # a form post: what a cross-site page could send
    assert response.status_code == 415
    bad = client.post(url("ls-predict", project), data="{", content_type="application/json",
                      **basic("maria", PASSWORD))
    assert bad.status_code == 400


def test_webhook_start_training_starts_a_run(client, project, manager, monkeypatch):
    started = []

    def start_run(proj, *, actor, **kwargs):
        started.append((proj, actor))
        return SimpleNamespace(pk=5)

    monkeypatch.setattr(training, "start_run", start_run)
    response = client.post(url("ls-webhook", project), data={"action": "START_TRAINING", "project": {"id": 3}},
                           content_type="application/json", **basic("maria", PASSWORD))
    assert response.status_code == 201 and response.json() == {"status": "queued", "run": 5}
    assert started == [(project, manager)]


def test_webhook_reports_a_refused_run_and_ignores_other_events(client, project, manager):
    refused = client.post(url("ls-webhook", project), data={"action": "START_TRAINING"},
                          content_type="application/json", **basic("maria", PASSWORD))
    assert refused.status_code == 409 and refused.json()["status"] == "refused"  # nothing verified yet
    other = client.post(url("ls-webhook", project), data={"action": "ANNOTATION_CREATED"},
                        content_type="application/json", **basic("maria", PASSWORD))
    assert other.status_code == 200 and other.json()["status"] == "ignored"


def test_a_password_change_ends_a_remembered_login(client, project, manager):
    assert client.get(url("ls-health", project), **basic("maria", PASSWORD)).status_code == 200
    manager.set_password("a-new-password-456")
    manager.save()
    assert client.get(url("ls-health", project), **basic("maria", PASSWORD)).status_code == 401
    assert client.get(url("ls-health", project), **basic("maria", "a-new-password-456")).status_code == 200
