"""Pages, upload, and media serving: membership is checked on every object."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotations.models import Clip, Membership
from ml.testing.samples import make_clip

from ..conftest import needs_ffmpeg, skip_without_ffmpeg

pytestmark = pytest.mark.django_db(transaction=True)  # uploads dispatch work on commit


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
