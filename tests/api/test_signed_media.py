"""Signed media links: valid with no session, with HTTP Range; refused when tampered with, expired, or when the
clip no longer stores the file the link names."""

import pytest
from django.core import signing

from annotations import signed_media

from .conftest import ready_clip

pytestmark = pytest.mark.django_db


@pytest.fixture
def clip(project, settings):
    return ready_clip(project, 1, media_root=settings.MEDIA_ROOT)


def media_url(api, clip):
    url = api.alice.get(f"/api/v1/clips/{clip.pk}/").json()["media_url"]
    assert url.startswith("http://testserver/media/s/")
    return url.removeprefix("http://testserver")


def test_a_signed_link_serves_the_clip_without_a_session(api, clip, client, settings):
    url = media_url(api, clip)
    response = client.get(url)  # no login, no token
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == (settings.MEDIA_ROOT / clip.file.name).read_bytes()
    assert response["Content-Type"] == "video/mp4" and response["Accept-Ranges"] == "bytes"
    assert response["Cache-Control"] == "private, no-store"


def test_a_signed_link_answers_ranges(api, clip, client):
    response = client.get(media_url(api, clip), HTTP_RANGE="bytes=10-19")
    assert response.status_code == 206
    assert response["Content-Range"] == "bytes 10-19/2048"
    assert b"".join(response.streaming_content) == bytes(range(10, 20))
    assert client.get(media_url(api, clip), HTTP_RANGE="bytes=9999-").status_code == 416


def test_a_tampered_link_is_404(api, clip, client, project):
    url = media_url(api, clip)
    token = url.rsplit("/", 1)[1]
    assert client.get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")).status_code == 404
    # a token for another clip id, signed with another key, is refused
    forged = signing.dumps({"c": clip.pk + 1, "f": clip.file.name}, key="not-the-secret", salt=signed_media.SALT)
    assert client.get(f"/media/s/{forged}").status_code == 404
    assert client.get(f"/media/s/{token}x").status_code == 404


def test_an_expired_link_is_404(api, clip, client, settings):
    url = media_url(api, clip)
    assert client.get(url).status_code == 200
    settings.SIGNED_MEDIA_SECONDS = -1  # every link is now older than its lifetime
    assert client.get(url).status_code == 404


def test_a_link_dies_with_the_file_it_names(api, clip, client, settings):
    url = media_url(api, clip)
    new_name = "clips/replaced.mp4"
    (settings.MEDIA_ROOT / new_name).write_bytes(b"new")
    clip.file.name = new_name
    clip.save(update_fields=["file"])
    assert client.get(url).status_code == 404  # the old file's link
    assert client.get(media_url(api, clip)).status_code == 200
    clip_id = clip.pk
    clip.delete()
    assert signed_media.resolve(signed_media.make_token(type(clip)(pk=clip_id, file=new_name))) is None


def test_a_link_never_reaches_files_other_than_the_clips_own(clip, client, settings):
    (settings.MEDIA_ROOT / "secret.txt").write_text("no")
    token = signing.dumps({"c": clip.pk, "f": "secret.txt"}, salt=signed_media.SALT, compress=True)
    assert client.get(f"/media/s/{token}").status_code == 404
    assert signed_media.url_for(None, clip, thumbnail=True) is None  # no thumbnail yet, no link
