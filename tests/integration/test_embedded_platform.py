"""`make run` end to end, over HTTP only: log in, create a project, upload a clip, let the real worker
process it, then play it back (thumbnail, duration, HTTP Range); and a folder import from the command line.

No Django test database here: everything goes through the running platform (tests/embedded.py).
"""

import re
import time
import uuid

import pytest
import requests

from ml.testing.samples import generate_sample_clips, make_clip
from tests.conftest import needs_ffmpeg

pytestmark = [pytest.mark.slow, needs_ffmpeg]

READY_TIMEOUT = 60  # seconds for the worker to take a clip from pending to ready


def log_in(platform) -> requests.Session:
    session = requests.Session()
    login_url = f"{platform.url}/accounts/login/"
    assert session.get(login_url, timeout=10).status_code == 200
    response = session.post(login_url, timeout=10, headers={"Referer": login_url}, data={
        "username": platform.admin_user,
        "password": platform.admin_password,
        "csrfmiddlewaretoken": session.cookies["csrftoken"],
    })
    assert response.status_code == 200, response.text[:500]
    assert f"Log out {platform.admin_user}" in response.text, "login did not succeed"
    return session


def post_form(session: requests.Session, url: str, **kwargs) -> requests.Response:
    """GET the page that holds the form (fresh CSRF cookie), then POST to `url` like the browser does."""
    page = kwargs.pop("page", url)
    assert session.get(page, timeout=10).status_code == 200
    data = {"csrfmiddlewaretoken": session.cookies["csrftoken"], **kwargs.pop("data", {})}
    return session.post(url, data=data, headers={"Referer": page}, timeout=60, **kwargs)


def create_project(session: requests.Session, platform, name: str) -> str:
    response = post_form(session, f"{platform.url}/projects/new/",
                         data={"name": name, "description": "made by the end-to-end test"})
    assert response.status_code == 200, response.text[:500]
    match = re.fullmatch(rf"{re.escape(platform.url)}/p/([\w-]+)/", response.url)
    assert match, f"create did not redirect to the project page: {response.url}"
    assert f"Project {name} created." in response.text
    return match.group(1)


def wait_until_ready(session: requests.Session, platform, slug: str, count: int) -> list[dict]:
    """Poll status.json like the project page does, until `count` clips are ready; fail fast on `failed`."""
    deadline, clips = time.monotonic() + READY_TIMEOUT, []
    while time.monotonic() < deadline:
        response = session.get(f"{platform.url}/p/{slug}/status.json", timeout=10)
        assert response.status_code == 200
        clips = response.json()["clips"]
        failed = [c for c in clips if c["status"] == "failed"]
        assert not failed, f"clips failed: {failed}\n{platform.log_tail()}"
        if len(clips) == count and all(c["status"] == "ready" for c in clips):
            return clips
        time.sleep(0.5)
    pytest.fail(f"clips not ready after {READY_TIMEOUT} s: {clips}\n--- platform log ---\n{platform.log_tail()}",
                pytrace=False)


def clip_row(html: str, clip_id: int) -> str:
    match = re.search(rf'<tr id="clip-{clip_id}".*?</tr>', html, re.DOTALL)
    assert match, f"no row for clip {clip_id} on the project page"
    return match.group(0)


def test_upload_is_processed_by_the_worker_and_plays_back(embedded_platform, tmp_path):
    platform = embedded_platform
    session = log_in(platform)
    slug = create_project(session, platform, f"E2E upload {uuid.uuid4().hex[:8]}")
    video = make_clip(tmp_path / "interview.mp4", seconds=2.0, extra=["-metadata", f"comment={uuid.uuid4()}"])

    with open(video, "rb") as fh:
        response = post_form(session, f"{platform.url}/p/{slug}/upload/", page=f"{platform.url}/p/{slug}/",
                             data={"transcript": "hello there", "language": "en"},
                             files={"files": ("interview.mp4", fh, "video/mp4")})
    assert response.status_code == 200
    assert response.url == f"{platform.url}/p/{slug}/"
    assert "imported interview.mp4" in response.text

    [clip] = wait_until_ready(session, platform, slug, 1)
    assert clip["thumbnail"] is True
    assert clip["duration"] == pytest.approx(2.0, abs=0.1)

    page = session.get(f"{platform.url}/p/{slug}/", timeout=10)
    row = clip_row(page.text, clip["id"])
    assert 'data-status="ready"' in row
    assert "2.0 s" in row
    assert "hello there" in row

    thumb = session.get(f"{platform.url}/clips/{clip['id']}/thumbnail", timeout=10)
    assert thumb.status_code == 200
    assert thumb.headers["Content-Type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff"

    size = video.stat().st_size
    media = session.get(f"{platform.url}/clips/{clip['id']}/media", headers={"Range": "bytes=0-99"}, timeout=10)
    assert media.status_code == 206
    assert len(media.content) == 100
    assert media.headers["Content-Range"] == f"bytes 0-99/{size}"
    assert media.headers["Content-Type"] == "video/mp4"
    assert media.content == video.read_bytes()[:100]
    assert media.headers["Cache-Control"] == "private, no-store"


def test_other_local_users_can_read_nothing_in_the_data_directory(embedded_platform):
    """The review read the admin's session and the password hashes as another local user."""
    platform = embedded_platform
    assert (platform.data_dir.stat().st_mode & 0o777) == 0o700
    readable = [str(p.relative_to(platform.data_dir)) for p in platform.data_dir.rglob("*")
                if p.stat().st_mode & 0o007 and not p.is_symlink() and p.name != "platform.log"]  # the test's own log
    assert readable == [], f"readable by other users: {readable[:20]}"
    database = platform.data_dir / "affectloop.sqlite3"
    assert database.exists() and (database.stat().st_mode & 0o077) == 0


def test_import_clips_command_feeds_the_running_worker(embedded_platform, tmp_path):
    platform = embedded_platform
    session = log_in(platform)
    name = f"E2E import {uuid.uuid4().hex[:8]}"
    slug = create_project(session, platform, name)
    folder = tmp_path / "clips"
    generate_sample_clips(folder, 2, seconds=1.0, width=160, height=120, seed=3, speech=False)

    result = platform.manage("import_clips", str(folder), "--project", name)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    imported = [line for line in result.stdout.splitlines() if line.startswith("imported ")]
    assert len(imported) == 2, result.stdout

    clips = wait_until_ready(session, platform, slug, 2)
    assert all(c["thumbnail"] for c in clips)
    assert all(c["duration"] == pytest.approx(1.0, abs=0.1) for c in clips)
