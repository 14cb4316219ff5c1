"""Push and pull against a real Label Studio server, started once per test run in its own cached virtualenv
(tests/integration/labelstudio_server.py). Where it cannot be built or started, the test skips and says why."""

import hashlib

import pytest

from annotations.models import Annotation, Clip, LabelStudioTask, Prediction, Role
from annotations.services import labelstudio, projects

from . import labelstudio_server

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory):
    pytest.importorskip("label_studio_sdk", reason="the labelstudio extra is not installed")
    try:
        server = labelstudio_server.start(tmp_path_factory.mktemp("label-studio"))
    except labelstudio_server.Unavailable as exc:
        pytest.skip(f"no Label Studio server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def connected(ls_server, project, manager, settings, django_user_model):
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.PUBLIC_BASE_URL = "http://affectloop.invalid"
    projects.update_config(project, {"labelstudio": {"url": ls_server.url}}, actor=manager)
    project.refresh_from_db()
    # Label Studio's preset user annotates; here that person is an annotator of the project.
    person = django_user_model.objects.create_user("ls-person", email=labelstudio_server.USERNAME.upper())
    projects.set_membership(project=project, user=person, role=Role.ANNOTATOR, actor=manager)
    return project, person


def make_clip(project, name, transcript):
    return Clip.objects.create(project=project, name=name, file=f"clips/{name}.mp4", original_name=f"{name}.mp4",
                               sha256=hashlib.sha256(name.encode()).hexdigest(), size_bytes=10,
                               transcript=transcript, status=Clip.Status.READY, duration=2.0)


def test_push_annotate_in_label_studio_pull_and_again_without_duplicates(ls_server, connected, manager):
    from label_studio_sdk.client import LabelStudio

    project, person = connected
    clips = [make_clip(project, f"talk_{i}", f"transcript {i}") for i in range(3)]
    Prediction.objects.create(clip=clips[0], backend="fused", model_version="fused:it-v1",
                              labels=[{"term": "happy", "score": 0.9}, {"term": "glimmering", "score": 0.4}])

    report = labelstudio.push(project, actor=manager)
    assert report.count("error") == 0, report.lines()
    project.refresh_from_db()
    ls_project = project.config["labelstudio"]["project_id"]
    ls = LabelStudio(base_url=ls_server.url, api_key=ls_server.token)
    tasks = list(labelstudio.list_tasks(ls, ls_project))
    assert len(tasks) == 3 and {t["data"]["name"] for t in tasks} == {"talk_0", "talk_1", "talk_2"}
    task0 = LabelStudioTask.objects.get(clip=clips[0]).task_id
    predictions = ls.predictions.list(task=task0)
    assert [p.model_version for p in predictions] == ["fused:it-v1"]
    assert "<Taxonomy" in ls.projects.get(id=ls_project).label_config

    ls.annotations.create(id=task0, result=[
        {"from_name": "emotions", "to_name": "transcript", "type": "taxonomy",
         "value": {"taxonomy": [["joy", "happy"], ["sadness", "sad"]]}},
        {"from_name": "other_emotions", "to_name": "transcript", "type": "textarea",
         "value": {"text": ["wistful"]}}], lead_time=4.0)

    pulled = labelstudio.pull(project, actor=manager)
    assert pulled.count("imported") == 1 and pulled.count("error") == 0, pulled.lines()
    annotation = Annotation.objects.get(clip=clips[0], annotator=person)
    assert annotation.status == Annotation.Status.SUBMITTED
    assert [label["term"] for label in annotation.labels] == ["happy", "sad", "wistful"]

    again = labelstudio.push(project, actor=manager)
    assert again.count("imported") == 0 and again.count("predicted") == 0 and again.count("error") == 0
    assert len(list(labelstudio.list_tasks(ls, ls_project))) == 3
    assert len(ls.predictions.list(task=task0)) == 1
    pulled_again = labelstudio.pull(project, actor=manager)
    assert pulled_again.count("imported") == 0 and pulled_again.count("error") == 0
    assert Annotation.objects.filter(clip__project=project).count() == 1
    assert annotation.revisions.count() == 1

    # A new model version is new to Label Studio too; a deleted task goes with its clip.
    Prediction.objects.create(clip=clips[0], backend="fused", model_version="fused:it-v2",
                              labels=[{"term": "calm", "score": 0.7}])
    assert labelstudio.push(project, actor=manager).count("predicted") == 1
    assert {p.model_version for p in ls.predictions.list(task=task0)} == {"fused:it-v1", "fused:it-v2"}
    task2 = LabelStudioTask.objects.get(clip=clips[2]).task_id
    assert labelstudio.delete_tasks(project, clip_ids=[clips[2].pk]).count("deleted") == 1
    assert task2 not in {t["id"] for t in labelstudio.list_tasks(ls, ls_project)}


@pytest.mark.django_db(transaction=True)
def test_label_studio_uses_our_ml_backend_with_basic_auth(ls_server, live_server, connected, manager, monkeypatch):
    """Label Studio itself connects to /ls/<slug>/ (health, setup), asks /predict for stored predictions and
    sends START_TRAINING to /webhook: the protocol as the real server speaks it."""
    from types import SimpleNamespace

    from label_studio_sdk.client import LabelStudio

    from annotations.services import training

    project, _person = connected
    clips = [make_clip(project, f"ml_{i}", f"words {i}") for i in range(2)]
    labelstudio.push(project, actor=manager)
    project.refresh_from_db()
    ls_project = project.config["labelstudio"]["project_id"]
    # Stored after the push, so only the ML backend can bring it to Label Studio.
    Prediction.objects.create(clip=clips[1], backend="fused", model_version="fused:ml-v1",
                              labels=[{"term": "happy", "score": 0.8}])
    started = []
    monkeypatch.setattr(training, "start_run",
                        lambda proj, *, actor, **kw: started.append((proj.pk, actor.pk)) or SimpleNamespace(pk=1))

    ls = LabelStudio(base_url=ls_server.url, api_key=ls_server.token)
    backend = ls.ml.create(project=ls_project, url=f"{live_server.url}/ls/{project.slug}/", title="Affectloop",
                           auth_method="BASIC_AUTH", basic_auth_user="maria", basic_auth_pass="pw-maria-123")
    assert ls.ml.get(id=backend.id).state in ("CO", "CONNECTED"), ls.ml.get(id=backend.id)
    ls.actions.create(id="retrieve_tasks_predictions", project=ls_project)
    task1 = LabelStudioTask.objects.get(clip=clips[1]).task_id
    versions = [p.model_version for p in ls.predictions.list(task=task1)]
    assert "fused:ml-v1" in versions, versions
    ls.ml.train(id=backend.id)
    assert started == [(project.pk, manager.pk)]
