"""Clips created through the API: by multipart upload (the same ingest as the web form, under the same body
gate) or by a path under the import root; never by URL."""

import shutil

import pytest

from annotations.models import Clip
from ml.testing.samples import make_clip
from tests.conftest import needs_ffmpeg

pytestmark = [pytest.mark.django_db(transaction=True), needs_ffmpeg]  # ingest dispatches work on commit


def upload(client, project, path, **extra):
    with open(path, "rb") as fh:
        return client.post(f"/api/v1/projects/{project.slug}/clips/", {"file": fh, **extra}, format="multipart")


def test_a_token_upload_becomes_a_ready_clip(api, project, tmp_path, settings):
    video = make_clip(tmp_path / "hello.mp4", seconds=1.0)
    settings.MAX_REQUEST_BYTES = 1024  # smaller than the video: only the upload route's gate lets it through
    response = upload(api.maria, project, video, transcript="I was so nervous", language="en")
    assert response.status_code == 201, response.json()
    body = response.json()
    clip = Clip.objects.get()
    assert body["status"] == "imported" and body["clip"]["id"] == clip.pk
    assert clip.status == "ready" and clip.transcript == "I was so nervous" and clip.name == "hello"
    again = upload(api.maria, project, video)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert Clip.objects.count() == 1


def test_a_fake_video_is_400_with_a_clear_reason(api, project, tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    response = upload(api.maria, project, fake)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "rejected" and body["clip"] is None
    assert body["line"].startswith("rejected fake.mp4: ") and str(tmp_path) not in body["line"]
    assert not Clip.objects.exists()


def test_a_file_over_the_upload_cap_is_refused_by_name(api, project, tmp_path, settings):
    video = make_clip(tmp_path / "big.mp4", seconds=1.0)
    settings.MAX_UPLOAD_BYTES = video.stat().st_size - 1
    response = upload(api.maria, project, video)
    assert response.status_code == 400
    assert response.json()["status"] == "rejected" and "big.mp4 is larger than" in response.json()["line"]
    assert not Clip.objects.exists()


def test_only_managers_may_send_a_body(api, project, tmp_path, settings):
    video = make_clip(tmp_path / "v.mp4", seconds=1.0)
    settings.MAX_REQUEST_BYTES = 1024
    assert upload(api.alice, project, video).status_code == 404  # refused on the headers, body unread
    assert upload(api.oscar, project, video).status_code == 404
    assert not Clip.objects.exists()


def test_nginx_body_gate_answers_for_tokens(project, manager, annotator, client):
    from .conftest import token_for

    def gate(user):
        return client.post("/_auth/upload", HTTP_X_ORIGINAL_URI=f"/api/v1/projects/{project.slug}/clips/",
                           HTTP_AUTHORIZATION=f"Token {token_for(user)}").status_code

    assert gate(manager) == 204
    assert gate(annotator) == 403
    assert client.post("/_auth/upload", HTTP_X_ORIGINAL_URI=f"/api/v1/projects/{project.slug}/clips/",
                       HTTP_AUTHORIZATION="Token afl_not-a-token").status_code == 401


def test_import_by_path_under_the_root_only(api, project, tmp_path, settings):
    root = tmp_path / "incoming"
    (root / "day1").mkdir(parents=True)
    make_clip(root / "day1" / "a.mp4", seconds=1.0)
    outside = make_clip(tmp_path / "secret.mp4", seconds=1.0, tone_hz=600)
    url = f"/api/v1/projects/{project.slug}/clips/"
    settings.API_IMPORT_ROOT = ""
    off = api.maria.post(url, {"path": "day1/a.mp4"}, format="json")
    assert off.status_code == 400 and "AFFECTLOOP_IMPORT_ROOT" in off.json()["error"]
    settings.API_IMPORT_ROOT = str(root)
    for bad in ("../secret.mp4", str(outside), "https://example.com/a.mp4", "day1/missing.mp4"):
        response = api.maria.post(url, {"path": bad}, format="json")
        assert response.status_code == 400, bad
    (root / "link.mp4").symlink_to(outside)
    assert api.maria.post(url, {"path": "link.mp4"}, format="json").status_code == 400  # a link out of the root
    done = api.maria.post(url, {"path": "day1/a.mp4"}, format="json")
    assert done.status_code == 201, done.json()
    clip = Clip.objects.get()
    assert clip.name == "day1/a" and clip.source == "import:folder" and clip.status == "ready"
    assert api.maria.post(url, {"path": "day1/a.mp4"}, format="json").json()["status"] == "duplicate"
    neither = api.maria.post(url, {}, format="json")
    assert neither.status_code == 400 and "either a file" in neither.json()["error"]
    shutil.rmtree(root)
