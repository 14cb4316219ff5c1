"""Pages, upload, and media serving: membership is checked on every object."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotations.models import Clip, Membership
from ml.testing.samples import make_clip

from ..conftest import needs_ffmpeg, skip_without_ffmpeg

pytestmark = pytest.mark.django_db(transaction=True)  # uploads dispatch work on commit


@pytest.fixture(autouse=True)
def _fresh_progress(monkeypatch):
    """These tests change the database between two polls milliseconds apart; the page's few seconds of
    cached progress (selectors.live_progress) are tested in test_index_upkeep.py."""
    from annotations import selectors

    monkeypatch.setattr(selectors, "PROGRESS_CACHE_SECONDS", 0)


def upload(client, project, path, **extra):
    with open(path, "rb") as fh:
        return client.post(reverse("annotations:clip-upload", args=[project.slug]),
                           {"files": [SimpleUploadedFile(path.name, fh.read(), "video/mp4")], **extra}, follow=True)


def test_pages_need_login(client, project):
    response = client.get(reverse("annotations:project-detail", args=[project.slug]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_project_list_shows_only_my_projects(client, project, outsider):
    client.force_login(outsider)
    assert "Interviews" not in client.get("/").content.decode()
    assert client.get(reverse("annotations:project-detail", args=[project.slug])).status_code == 404


def test_only_staff_with_permission_create_projects(client, annotator, manager):
    client.force_login(annotator)
    assert client.post(reverse("annotations:project-create"), {"name": "Mine"}).status_code == 403
    manager.is_superuser = True
    manager.save()
    client.force_login(manager)
    response = client.post(reverse("annotations:project-create"), {"name": "Street interviews"}, follow=True)
    assert response.status_code == 200
    assert Membership.objects.get(project__slug="street-interviews", user=manager).role == "manager"
    again = client.post(reverse("annotations:project-create"), {"name": "street interviews"})
    assert "already exists" in again.content.decode()


@needs_ffmpeg
def test_manager_upload_becomes_ready_with_thumbnail_and_duration(client, project, manager, tmp_path):
    client.force_login(manager)
    response = upload(client, project, make_clip(tmp_path / "hello.mp4", seconds=1.5),
                      transcript="<b>I was so nervous</b>", language="en")
    clip = Clip.objects.get()
    assert f"imported hello.mp4: clip {clip.pk}" in response.content.decode()
    assert clip.status == "ready" and abs(clip.duration - 1.5) < 0.2 and clip.thumbnail
    page = client.get(reverse("annotations:project-detail", args=[project.slug])).content.decode()
    assert "&lt;b&gt;I was so nervous&lt;/b&gt;" in page and "<b>I was so nervous" not in page
    assert "1.5 s" in page
    thumb = client.get(reverse("annotations:clip-thumbnail", args=[clip.pk]))
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    status = client.get(reverse("annotations:project-status", args=[project.slug])).json()
    assert status["counts"]["ready"] == 1 and status["clips"][0]["status"] == "ready"


@needs_ffmpeg
def test_upload_of_a_fake_video_is_rejected_with_a_message(client, project, manager, tmp_path):
    client.force_login(manager)
    fake = tmp_path / "fake.mp4"
    fake.write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    response = upload(client, project, fake)
    assert "rejected fake.mp4: " in response.content.decode()
    assert not Clip.objects.exists()


@needs_ffmpeg
def test_duplicate_upload_is_reported(client, project, manager, tmp_path):
    client.force_login(manager)
    video = make_clip(tmp_path / "a.mp4")
    upload(client, project, video)
    response = upload(client, project, video)
    assert "duplicate a.mp4: same content as clip" in response.content.decode()
    assert Clip.objects.count() == 1


def test_annotator_and_outsider_cannot_upload(client, project, annotator, outsider, tmp_path):
    fake = tmp_path / "x.mp4"
    fake.write_bytes(b"\x00" * 100)
    for user in (annotator, outsider):
        client.force_login(user)
        assert upload(client, project, fake).status_code == 404
    assert not Clip.objects.exists()


def test_upload_requires_csrf(project, manager):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(manager)
    response = client.post(reverse("annotations:clip-upload", args=[project.slug]), {})
    assert response.status_code == 403


@pytest.fixture
def ready_clip(client, project, manager, tmp_path):
    skip_without_ffmpeg()
    client.force_login(manager)
    upload(client, project, make_clip(tmp_path / "seek.mp4", seconds=2))
    client.logout()
    return Clip.objects.get()


def read(response) -> bytes:
    return b"".join(response.streaming_content)


def test_media_supports_range_requests_for_members(client, ready_clip, annotator):
    client.force_login(annotator)
    url = reverse("annotations:clip-media", args=[ready_clip.pk])
    data = ready_clip.file.open("rb").read()
    full = client.get(url)
    assert full.status_code == 200 and full["Accept-Ranges"] == "bytes" and read(full) == data
    assert full["Content-Type"] == "video/mp4" and full["X-Content-Type-Options"] == "nosniff"
    part = client.get(url, HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert read(part) == data[100:200] and part["Content-Length"] == "100"
    tail = client.get(url, HTTP_RANGE="bytes=-50")
    assert tail.status_code == 206 and read(tail) == data[-50:]
    open_end = client.get(url, HTTP_RANGE=f"bytes={len(data) - 10}-")
    assert read(open_end) == data[-10:]
    bad = client.get(url, HTTP_RANGE=f"bytes={len(data) + 5}-")
    assert bad.status_code == 416 and bad["Content-Range"] == f"bytes */{len(data)}"


def test_media_is_hidden_from_non_members(client, ready_clip, outsider):
    client.force_login(outsider)
    assert client.get(reverse("annotations:clip-media", args=[ready_clip.pk])).status_code == 404
    assert client.get(reverse("annotations:clip-thumbnail", args=[ready_clip.pk])).status_code == 404
    client.logout()
    assert client.get(reverse("annotations:clip-media", args=[ready_clip.pk])).status_code == 302


def test_media_uses_x_accel_redirect_behind_nginx(client, ready_clip, annotator, settings):
    settings.MEDIA_ACCEL_PREFIX = "/protected-media/"
    client.force_login(annotator)
    response = client.get(reverse("annotations:clip-media", args=[ready_clip.pk]))
    assert response.status_code == 200 and response.content == b""
    assert response["X-Accel-Redirect"] == "/protected-media/" + ready_clip.file.name
    assert response["Content-Type"] == "video/mp4"


def test_media_outside_our_types_is_a_download_never_inline(client, project, annotator, settings):
    """An .html put in place by hand must not run script on this site when a member opens it."""
    from pathlib import Path

    evil = Path(settings.MEDIA_ROOT) / "clips" / "evil.html"
    evil.parent.mkdir(parents=True, exist_ok=True)
    evil.write_text("<script>alert(1)</script>")
    clip = Clip.objects.create(project=project, file="clips/evil.html", original_name="evil.html", name="evil",
                               sha256="e" * 64, size_bytes=evil.stat().st_size)
    client.force_login(annotator)
    response = client.get(reverse("annotations:clip-media", args=[clip.pk]))
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Security-Policy"] == "sandbox"


# --- upload: one result per file; JSON for the page's script ---------------------------------------------
UPLOAD_JSON = {"HTTP_ACCEPT": "application/json", "HTTP_X_REQUESTED_WITH": "fetch"}


def post_files(client, project, files, follow=True, **headers):
    return client.post(reverse("annotations:clip-upload", args=[project.slug]), {"files": files},
                       follow=follow, **headers)


def as_upload(path, name=None):
    return SimpleUploadedFile(name or path.name, path.read_bytes(), "video/mp4")


@needs_ffmpeg
def test_an_empty_file_is_rejected_by_name_and_the_others_are_imported(client, project, manager, tmp_path):
    client.force_login(manager)
    files = [as_upload(make_clip(tmp_path / "one.mp4")), SimpleUploadedFile("hollow.mp4", b"", "video/mp4"),
             as_upload(make_clip(tmp_path / "two.mp4", extra=["-metadata", "comment=two"]))]
    page = post_files(client, project, files).content.decode()
    assert sorted(Clip.objects.values_list("name", flat=True)) == ["one", "two"]
    assert "imported one.mp4" in page and "imported two.mp4" in page
    assert "rejected hollow.mp4: the file is empty" in page


@needs_ffmpeg
def test_the_json_answer_has_one_line_per_file_and_adds_no_messages(client, project, manager, tmp_path):
    client.force_login(manager)
    good = make_clip(tmp_path / "good.mp4")
    files = [as_upload(good), SimpleUploadedFile("empty.mp4", b"", "video/mp4"), as_upload(good, "again.mp4")]
    response = post_files(client, project, files, follow=False, **UPLOAD_JSON)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    clip = Clip.objects.get()
    assert response.json() == {"errors": [], "results": [
        {"file": "good.mp4", "status": "imported", "line": f"imported good.mp4: clip {clip.pk}"},
        {"file": "empty.mp4", "status": "rejected", "line": "rejected empty.mp4: the file is empty"},
        {"file": "again.mp4", "status": "duplicate", "line": f"duplicate again.mp4: same content as clip {clip.pk} "
                                                             f"(good)"}]}
    # The page showed the lines itself: none of them waits as a message for the next page.
    page = client.get(reverse("annotations:project-detail", args=[project.slug])).content.decode()
    assert "rejected empty.mp4" not in page and "imported good.mp4" not in page


def test_json_upload_of_only_an_empty_file_names_it_and_nothing_sent_is_a_400(client, project, manager):
    client.force_login(manager)
    only_empty = post_files(client, project, [SimpleUploadedFile("zero.mp4", b"")], follow=False,
                            HTTP_X_REQUESTED_WITH="fetch")
    assert only_empty.status_code == 200
    assert only_empty.json()["results"] == [{"file": "zero.mp4", "status": "rejected",
                                             "line": "rejected zero.mp4: the file is empty"}]
    nothing = post_files(client, project, [], follow=False, **UPLOAD_JSON)
    assert nothing.status_code == 400
    assert nothing.json() == {"results": [], "errors": ["Choose at least one video file."]}
    # A bad field refuses the request as a whole, naming the field, in both answers.
    url = reverse("annotations:clip-upload", args=[project.slug])
    bad = client.post(url, {"files": [SimpleUploadedFile("a.mp4", b"x")], "language": "x" * 40}, **UPLOAD_JSON)
    assert bad.status_code == 400 and bad.json()["errors"][0].startswith("Language: Ensure this value has at most")
    page = client.post(url, {"files": [SimpleUploadedFile("a.mp4", b"x")], "language": "x" * 40},
                       follow=True).content.decode()
    assert "Language: Ensure this value has at most 16 characters" in page
    assert not Clip.objects.exists()


def test_a_file_over_the_cap_gets_its_own_rejected_line_in_json(client, project, manager, settings):
    settings.MAX_UPLOAD_BYTES = 64 * 1024
    client.force_login(manager)
    files = [SimpleUploadedFile("huge.mp4", b"\0" * (settings.MAX_UPLOAD_BYTES + 1)),
             SimpleUploadedFile("empty.mp4", b"")]
    response = post_files(client, project, files, follow=False, **UPLOAD_JSON)
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"file": "huge.mp4", "status": "rejected", "line": "huge.mp4 is larger than the 64 KB limit: not imported"},
        {"file": "empty.mp4", "status": "rejected", "line": "rejected empty.mp4: the file is empty"}]
    only_huge = post_files(client, project, files[:1], follow=False, **UPLOAD_JSON)
    assert only_huge.status_code == 200 and only_huge.json()["errors"] == []  # named, so not "nothing sent"


# --- the project page's status: whether more is coming, and what the models said -------------------------
def stored_clip(project, name, **fields):
    import hashlib

    return Clip.objects.create(project=project, name=name, file=f"clips/{name}.mp4", original_name=f"{name}.mp4",
                               sha256=hashlib.sha256(name.encode()).hexdigest(), size_bytes=10,
                               **{"status": Clip.Status.READY, "duration": 2.0, **fields})


def status_of(client, project):
    return client.get(reverse("annotations:project-status", args=[project.slug])).json()


def configure_internvl(project, *, registered=True):
    """A configured backend (and its active model), set without the config service's side effects (tasks)."""
    from annotations.models import ModelVersion, Project

    Project.objects.filter(pk=project.pk).update(
        config={"prelabel": {"backends": {"internvl": {"model": "ivl", "num_frames": 2}}}})
    if registered:
        ModelVersion.objects.create(project=project, backend="internvl", name="internvl:ivl+base",
                                    base_model="ivl", status="active")


def test_status_is_busy_while_clips_wait_to_be_queued_for_prelabeling(client, project, annotator):
    from django.utils import timezone

    from annotations.models import Prediction, Project
    from annotations.services import prelabel

    client.force_login(annotator)
    assert status_of(client, project)["busy"] is False  # nothing at all
    pending = stored_clip(project, "incoming", status=Clip.Status.PENDING)
    assert status_of(client, project)["busy"] is True
    pending.delete()

    configure_internvl(project)
    clip = stored_clip(project, "fresh")  # ready, in the debounce before its batch is queued
    status = status_of(client, project)
    assert (status["prelabel"]["queued"], status["prelabel"]["waiting"], status["busy"]) == (0, 1, True)
    Clip.objects.filter(pk=clip.pk).update(prelabel_queued_at=timezone.now())
    status = status_of(client, project)
    assert (status["prelabel"]["queued"], status["prelabel"]["waiting"], status["busy"]) == (1, 0, True)
    wanted = prelabel.plan(Project.objects.get(pk=project.pk)).wanted  # fresh: the config was set behind it
    assert len(wanted) == 2
    for version in wanted:  # the worker stored its answer and the fusion
        Prediction.objects.create(clip=clip, backend="fused" if version.startswith("fused:") else "internvl",
                                  model_version=version, labels=[{"term": "calm"}])
    Clip.objects.filter(pk=clip.pk).update(prelabel_queued_at=None)
    status = status_of(client, project)
    assert (status["prelabel"]["prelabeled"], status["prelabel"]["waiting"], status["busy"]) == (1, 0, False)

    # Taken by humans: no longer waits for the models.
    other = stored_clip(project, "taken")
    assert status_of(client, project)["busy"] is True
    Clip.objects.filter(pk=other.pk).update(label_state=Clip.LabelState.SUBMITTED)
    assert status_of(client, project)["busy"] is False


def test_status_waits_for_an_unregistered_model_until_its_registration_fails(client, project, annotator):
    client.force_login(annotator)
    configure_internvl(project, registered=False)
    clip = stored_clip(project, "fresh")
    status = status_of(client, project)
    assert status["busy"] is True and status["prelabel"]["waiting"] == 1
    Clip.objects.filter(pk=clip.pk).update(prelabel_error="internvl: no such model")
    status = status_of(client, project)
    assert status["busy"] is False and status["prelabel"]["failed"] == 1


def test_empty_and_flagged_predictions_are_counted_as_such_not_as_prelabeled(client, project, annotator):
    from datetime import timedelta

    from django.utils import timezone

    from annotations.models import Prediction

    def predict(clip, backend, labels, flags=(), version="v1"):
        return Prediction.objects.create(clip=clip, backend=backend, model_version=f"{backend}:{version}",
                                         labels=[{"term": t} for t in labels], flags=list(flags))

    good, empty, truncated, retried, flagged_empty, bare = (
        stored_clip(project, n) for n in ("good", "empty", "truncated", "retried", "flagged-empty", "bare"))
    predict(good, "internvl", ["calm"]), predict(good, "fused", ["calm"])
    predict(empty, "internvl", [], ["empty"]), predict(empty, "fused", [])
    predict(truncated, "internvl", ["tense"], ["truncated"]), predict(truncated, "affectgpt", ["calm"])
    predict(truncated, "fused", ["tense", "calm"])
    # Only a clip's latest answer per backend counts: an earlier truncated one was superseded.
    old = predict(retried, "internvl", ["sad"], ["truncated"])
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    predict(retried, "internvl", ["sad"], version="v2"), predict(retried, "fused", ["sad"])
    # Another backend's empty answer beside a useful one: fused has labels, but the clip is flagged.
    predict(flagged_empty, "internvl", ["happy"]), predict(flagged_empty, "affectgpt", [])
    predict(flagged_empty, "fused", ["happy"])
    del bare  # no predictions at all: neither

    client.force_login(annotator)
    counts = status_of(client, project)["prelabel"]
    assert (counts["prelabeled"], counts["empty"], counts["flagged"], counts["ready"]) == (2, 1, 2, 6)
    page = client.get(reverse("annotations:project-detail", args=[project.slug])).content.decode()
    for key in ("prelabeled", "empty", "flagged", "waiting", "queued"):
        assert f'data-prelabel="{key}"' in page
