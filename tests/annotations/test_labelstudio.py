"""services.labelstudio against a fake Label Studio on httpx's mock transport (the SDK 2.x client takes an
httpx client): push creates the project and imports each clip once with signed links and predictions, pull
brings annotations back through the annotating service once, unknown people are reported, erasure deletes
the task on commit and survives Label Studio being down. The real server: tests/integration."""

import hashlib
import io
import json
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotations import signed_media
from annotations.models import (
    Annotation,
    AnnotationRevision,
    AuditEvent,
    Clip,
    LabelStudioTask,
    Prediction,
    Role,
)
from annotations.services import erasure, labelstudio, projects

pytest.importorskip("label_studio_sdk", reason="the labelstudio extra is not installed")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.django_db

LS_URL = "http://ls.test"


class FakeLabelStudio:
    """Just enough of Label Studio's REST API for the calls the service makes."""

    def __init__(self):
        self.projects: dict[int, dict] = {}
        self.tasks: dict[int, dict] = {}
        self.predictions: list[dict] = []
        self.users = [{"id": 1, "email": "ls-admin@example.org", "username": "admin"}]
        self.next_id = 100
        self.calls: list[tuple[str, str]] = []
        self.down = False

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def handler(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path.rstrip("/"), request.method
        self.calls.append((method, path))
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content) if request.content else None
        if path == "/api/projects" and method == "POST":
            pid = self._id()
            self.projects[pid] = {"id": pid, **body}
            return httpx.Response(201, json=self.projects[pid])
        if m := re.fullmatch(r"/api/projects/(\d+)", path):
            project = self.projects.get(int(m[1]))
            if project is None:
                return httpx.Response(404, json={"detail": "Not found."})
            if method == "PATCH":
                project.update(body)
            return httpx.Response(200, json=project)
        if m := re.fullmatch(r"/api/projects/(\d+)/import", path):
            ids = []
            for item in body:
                tid = self._id()
                self.tasks[tid] = {"id": tid, "project": int(m[1]), "data": item["data"], "annotations": []}
                ids.append(tid)
            return httpx.Response(201, json={"task_count": len(ids), "task_ids": ids, "annotation_count": 0})
        if path == "/api/tasks" and method == "GET":
            project = int(request.url.params["project"])
            page, size = int(request.url.params["page"]), int(request.url.params["page_size"])
            mine = [t for t in self.tasks.values() if t["project"] == project]
            chunk = mine[(page - 1) * size:page * size]
            if page > 1 and not chunk:
                return httpx.Response(404, json={"detail": "Invalid page."})
            return httpx.Response(200, json={"tasks": chunk, "total": len(mine), "total_annotations": 0,
                                             "total_predictions": 0})
        if m := re.fullmatch(r"/api/tasks/(\d+)", path):
            tid = int(m[1])
            if tid not in self.tasks:
                return httpx.Response(404, json={"detail": "Not found."})
            if method == "DELETE":
                del self.tasks[tid]
                return httpx.Response(204)
            if method == "PATCH":
                self.tasks[tid].update(body)
            return httpx.Response(200, json=self.tasks[tid])
        if path == "/api/predictions" and method == "POST":
            self.predictions.append(body)
            return httpx.Response(201, json={"id": len(self.predictions), **body})
        if path == "/api/users" and method == "GET":
            return httpx.Response(200, json=self.users)
        return httpx.Response(404, json={"detail": f"fake has no {method} {path}"})

    def annotate(self, task_id: int, author: int, result: list, **extra) -> dict:
        annotation = {"id": self._id(), "completed_by": author, "result": result, "was_cancelled": False,
                      "updated_at": "2026-11-26T10:00:00Z", "lead_time": 12.0, **extra}
        self.tasks[task_id]["annotations"].append(annotation)
        return annotation


@pytest.fixture
def fake(monkeypatch, settings):
    from label_studio_sdk.client import LabelStudio

    fake = FakeLabelStudio()
    settings.LABEL_STUDIO_API_KEY = "test-key"
    settings.PUBLIC_BASE_URL = "https://affectloop.example.org"
    monkeypatch.setattr(labelstudio, "make_client", lambda url: LabelStudio(
        base_url=url, api_key="test-key", httpx_client=httpx.Client(transport=httpx.MockTransport(fake.handler))))
    return fake


def ready_clip(project, name, **fields):
    return Clip.objects.create(project=project, name=name, file=f"clips/{name}.mp4", original_name=f"{name}.mp4",
                               sha256=hashlib.sha256(name.encode()).hexdigest(), size_bytes=10,
                               transcript=f"words of {name}",
                               **{"status": Clip.Status.READY, "duration": 2.0, **fields})


@pytest.fixture
def connected(project, manager):
    projects.update_config(project, {"labelstudio": {"url": LS_URL}}, actor=manager)
    project.refresh_from_db()
    return project


@pytest.fixture
def clips(connected):
    made = [ready_clip(connected, f"clip_{i}") for i in range(3)]
    Prediction.objects.create(clip=made[0], backend="fused", model_version="fused:v1",
                              labels=[{"term": "happy", "score": 0.9}, {"term": "zorbish", "score": 0.5}])
    Prediction.objects.create(clip=made[1], backend="internvl", model_version="internvl:v1",
                              labels=[{"term": "anxious", "score": None}])
    return made


def test_the_labelling_config_has_video_transcript_free_text_and_the_vocabulary(connected):
    config = labelstudio.labelling_config(connected)
    assert '<Video name="video" value="$video"/>' in config
    assert '<Text name="transcript" value="$transcript"/>' in config
    assert '<TextArea name="other_emotions"' in config
    assert '<Choice value="joy">' in config and '<Choice value="happy"/>' in config
    from xml.etree import ElementTree

    ElementTree.fromstring(config)  # well-formed


def test_push_creates_the_project_imports_clips_with_signed_links_and_sends_predictions(fake, clips, manager):
    report = labelstudio.push(clips[0].project, actor=manager)
    assert report.count("error") == 0, report.lines()
    project = clips[0].project
    project.refresh_from_db()
    ls_project = project.config["labelstudio"]["project_id"]
    assert ls_project in fake.projects and "<Taxonomy" in fake.projects[ls_project]["label_config"]
    assert report.count("imported") == 4  # the project and three clips
    rows = {row.clip_id: row for row in LabelStudioTask.objects.all()}
    assert set(rows) == {c.pk for c in clips}
    task = fake.tasks[rows[clips[0].pk].task_id]
    assert task["data"]["transcript"] == "words of clip_0" and task["data"]["affectloop_clip"] == clips[0].pk
    url = task["data"]["video"]
    assert url.startswith("https://affectloop.example.org/media/s/")
    assert signed_media.resolve(url.rsplit("/", 1)[1])[0] == clips[0]
    sent = {p["task"]: p for p in fake.predictions}
    first = sent[rows[clips[0].pk].task_id]
    assert first["model_version"] == "fused:v1" and first["score"] == pytest.approx(0.7)
    assert {"from_name": "emotions", "to_name": "transcript", "type": "taxonomy",
            "value": {"taxonomy": [["joy", "happy"]]}} in first["result"]
    assert {"from_name": "other_emotions", "to_name": "transcript", "type": "textarea",
            "value": {"text": ["zorbish"]}} in first["result"]
    assert "score" not in sent[rows[clips[1].pk].task_id]  # no token probabilities: no score
    assert rows[clips[2].pk].task_id not in sent  # no prediction at all
    assert AuditEvent.objects.filter(action="labelstudio.pushed").count() == 1


def test_pushing_again_imports_nothing_and_sends_only_a_new_model_version(fake, clips):
    labelstudio.push(clips[0].project)
    tasks, predictions = dict(fake.tasks), len(fake.predictions)
    again = labelstudio.push(clips[0].project)
    assert again.count("imported") == 0 and again.count("predicted") == 0 and again.count("error") == 0
    assert again.count("updated") == 3  # links renewed
    assert set(fake.tasks) == set(tasks) and len(fake.predictions) == predictions
    Prediction.objects.create(clip=clips[0], backend="fused", model_version="fused:v2",
                              labels=[{"term": "sad", "score": 0.6}])
    third = labelstudio.push(clips[0].project)
    assert third.count("predicted") == 1 and fake.predictions[-1]["model_version"] == "fused:v2"


def test_an_interrupted_push_is_adopted_not_imported_twice(fake, clips):
    labelstudio.push(clips[0].project)
    LabelStudioTask.objects.all().delete()  # as if the push died after Label Studio imported the tasks
    report = labelstudio.push(clips[0].project)
    assert report.count("imported") == 0
    assert len(fake.tasks) == 3 and LabelStudioTask.objects.count() == 3


def test_pull_imports_annotations_once_through_the_annotating_service(fake, clips, annotator, manager):
    project = clips[0].project
    annotator.email = "Alice@Example.org"
    annotator.save()
    labelstudio.push(project)
    fake.users.append({"id": 7, "email": "alice@example.org", "username": "alice"})
    fake.users.append({"id": 8, "email": "stranger@example.org", "username": "stranger"})
    task0 = LabelStudioTask.objects.get(clip=clips[0]).task_id
    task1 = LabelStudioTask.objects.get(clip=clips[1]).task_id
    fake.annotate(task0, 7, [{"from_name": "emotions", "to_name": "transcript", "type": "taxonomy",
                              "value": {"taxonomy": [["joy", "happy"], ["fear", "anxious"]]}},
                             {"from_name": "other_emotions", "to_name": "transcript", "type": "textarea",
                              "value": {"text": ["wistful, Happy"]}}])
    fake.annotate(task1, 8, [{"from_name": "emotions", "to_name": "transcript", "type": "taxonomy",
                              "value": {"taxonomy": [["sadness", "sad"]]}}])
    fake.annotate(task1, 7, [], was_cancelled=True)

    report = labelstudio.pull(project, actor=manager)
    assert report.count("imported") == 1, report.lines()
    annotation = Annotation.objects.get(clip=clips[0], annotator=annotator)
    assert annotation.status == Annotation.Status.SUBMITTED
    assert [label["term"] for label in annotation.labels] == ["happy", "anxious", "wistful"]
    assert annotation.revisions.count() == 1
    stranger = [line for line in report.lines() if "stranger@example.org" in line]
    assert stranger and stranger[0].startswith("error ") and "no account is created" in stranger[0]
    assert not type(annotator).objects.filter(email__iexact="stranger@example.org").exists()
    assert any(line.startswith("skipped") and "skipped in Label Studio" in line for line in report.lines())

    again = labelstudio.pull(project, actor=manager)
    assert again.count("imported") == 0
    assert any("already pulled" in line for line in again.lines())
    assert Annotation.objects.filter(clip__project=project).count() == 1
    assert AnnotationRevision.objects.filter(annotation__clip__project=project).count() == 1


def test_pull_before_push_and_without_connection_say_what_to_do(fake, project, connected):
    with pytest.raises(labelstudio.LabelStudioError, match="push first"):
        labelstudio.pull(connected)


def test_not_connected_or_without_key_is_a_clear_error(project, settings):
    settings.LABEL_STUDIO_API_KEY = ""
    with pytest.raises(labelstudio.LabelStudioError, match="not connected"):
        labelstudio.push(project)
    projects.update_config(project, {"labelstudio": {"url": LS_URL}})
    project.refresh_from_db()
    with pytest.raises(labelstudio.LabelStudioError, match="API key"):
        labelstudio.push(project)


def test_push_needs_the_public_url(fake, clips, settings):
    settings.PUBLIC_BASE_URL = ""
    with pytest.raises(labelstudio.LabelStudioError, match="AFFECTLOOP_PUBLIC_URL"):
        labelstudio.push(clips[0].project)


def test_erasing_a_clip_deletes_its_task_on_commit(fake, clips, manager, django_capture_on_commit_callbacks):
    project = clips[0].project
    labelstudio.push(project)
    task0 = LabelStudioTask.objects.get(clip=clips[0]).task_id
    with django_capture_on_commit_callbacks(execute=True):
        erasure.erase(project, {"names": ["clip_0"]}, actor=manager)
    assert task0 not in fake.tasks and len(fake.tasks) == 2
    assert ("DELETE", f"/api/tasks/{task0}") in fake.calls


def test_erasure_stands_when_label_studio_is_down_and_the_next_push_removes_the_orphan(
        fake, clips, manager, django_capture_on_commit_callbacks, caplog):
    project = clips[0].project
    labelstudio.push(project)
    task0 = LabelStudioTask.objects.get(clip=clips[0]).task_id
    fake.down = True
    with django_capture_on_commit_callbacks(execute=True):
        erasure.erase(project, {"names": ["clip_0"]}, actor=manager)
    assert not Clip.objects.filter(pk=clips[0].pk).exists()
    assert task0 in fake.tasks and "not deleted" in caplog.text
    fake.down = False
    report = labelstudio.push(project)
    assert task0 not in fake.tasks
    assert any(line.startswith(f"deleted task {task0}") for line in report.lines())


def test_delete_tasks_by_clip_or_task_id(fake, clips):
    project = clips[0].project
    labelstudio.push(project)
    t0, t1 = (LabelStudioTask.objects.get(clip=c).task_id for c in clips[:2])
    report = labelstudio.delete_tasks(project, clip_ids=[clips[0].pk], task_ids=[t1, 99999])
    assert report.count("deleted") == 2 and report.count("skipped") == 1  # 99999: already gone
    assert t0 not in fake.tasks and t1 not in fake.tasks
    assert not LabelStudioTask.objects.filter(task_id__in=[t0, t1]).exists()


def test_the_commands_print_a_report(fake, clips):
    out, err = io.StringIO(), io.StringIO()
    call_command("labelstudio_push", "--project", clips[0].project.name, stdout=out, stderr=err)
    assert "imported clip_0: task" in out.getvalue() and "imported 4" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    call_command("labelstudio_pull", "--project", clips[0].project.slug, stdout=out, stderr=err)
    assert "nothing to do" in err.getvalue()


def test_the_buttons_are_for_managers_only(fake, clips, client, manager, annotator):
    project = clips[0].project
    push = reverse("annotations:labelstudio-push", args=[project.slug])
    client.force_login(annotator)
    assert client.post(push).status_code == 404
    client.force_login(manager)
    assert client.get(push).status_code == 405
    response = client.post(push, follow=True)
    assert response.status_code == 200
    assert "Label Studio push" in response.content.decode()
    assert LabelStudioTask.objects.count() == 3


def test_the_project_page_shows_the_buttons_to_managers_of_a_connected_project(client, connected, manager,
                                                                                annotator):
    page = reverse("annotations:project-detail", args=[connected.slug])
    client.force_login(manager)
    html = client.get(page).content.decode()
    assert reverse("annotations:labelstudio-push", args=[connected.slug]) in html
    assert reverse("annotations:labelstudio-pull", args=[connected.slug]) in html
    assert f"/ls/{connected.slug}/" in html
    client.force_login(annotator)
    assert "labelstudio/push" not in client.get(page).content.decode()


def test_an_unconnected_project_page_has_no_label_studio_section(client, project, manager):
    client.force_login(manager)
    html = client.get(reverse("annotations:project-detail", args=[project.slug])).content.decode()
    assert 'id="labelstudio"' not in html


def test_label_studio_down_is_a_clear_error_not_a_crash(fake, clips):
    fake.down = True
    with pytest.raises(labelstudio.LabelStudioError, match="ConnectError: connection refused"):
        labelstudio.push(clips[0].project)


def test_a_clip_closed_to_the_author_is_an_error_line_and_leaves_no_draft(fake, clips, annotator,
                                                                          django_user_model):
    project = clips[0].project
    annotator.email = "alice@example.org"
    annotator.save()
    labelstudio.push(project)
    # Someone else holds the clip's one place (overlap 1) right now.
    from annotations.services import queue

    bob = django_user_model.objects.create_user("bob")
    projects.set_membership(project=project, user=bob, role=Role.ANNOTATOR)
    queue.claim(bob, clips[0])
    fake.users.append({"id": 7, "email": "alice@example.org", "username": "alice"})
    fake.annotate(LabelStudioTask.objects.get(clip=clips[0]).task_id, 7, [
        {"from_name": "emotions", "to_name": "transcript", "type": "taxonomy", "value": {"taxonomy": [["joy", "happy"]]}}])
    report = labelstudio.pull(project)
    assert report.count("error") == 1 and "not open to you" in report.lines()[-1]
    assert not Annotation.objects.filter(clip=clips[0], annotator=annotator).exists()


def test_a_large_project_is_pushed_by_a_worker(fake, clips, client, manager, monkeypatch,
                                               django_capture_on_commit_callbacks):
    from annotations import labelstudio_views

    monkeypatch.setattr(labelstudio_views, "WEB_SYNC_LIMIT", 2)
    client.force_login(manager)
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(reverse("annotations:labelstudio-push", args=[clips[0].project.slug]), follow=True)
    assert "queued for 3 clips" in page.content.decode()
    assert LabelStudioTask.objects.count() == 3  # eager in tests: the task ran
    assert labelstudio.run_step(clips[0].project.pk, "pull", manager.pk).endswith("nothing to do")
