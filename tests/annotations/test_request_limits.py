"""Request bodies: refused on their headers before anything reads them; uploads only for those who may.

The WSGI tests call Django's real handler with an input stream that fails the test if it is read, so
"before the body is read" is checked, not assumed.
"""

import io
import tempfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client
from django.urls import reverse

from annotations.models import Clip

pytestmark = pytest.mark.django_db(transaction=True)


class MustNotRead(io.RawIOBase):
    """A request body whose bytes nobody may read."""

    def __init__(self):
        self.reads = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        self.reads += 1
        raise AssertionError("the request body was read")


def wsgi_post(path: str, length: int, *, cookies: str = "", extra: dict | None = None):
    body = MustNotRead()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost",
        "CONTENT_TYPE": "multipart/form-data; boundary=xyz", "CONTENT_LENGTH": str(length),
        "HTTP_COOKIE": cookies, "wsgi.input": body, "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        **(extra or {}),
    }
    status = {}

    def start_response(code, headers, exc_info=None):
        status["code"], status["headers"] = int(code.split()[0]), dict(headers)

    response = WSGIHandler()(environ, start_response)
    b"".join(response)
    response.close()
    return status["code"], status["headers"], body.reads


def session_cookie(client: Client) -> str:
    return "; ".join(f"{k}={v.value}" for k, v in client.cookies.items())


def temp_files() -> set[str]:
    return set(p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.endswith(".upload"))


# The review's attacker had a CSRF cookie and nothing else: the CSRF check then parses the body for the token.
CSRF_ONLY = "csrftoken=" + "c" * 32


def test_anonymous_upload_is_refused_unread(project):
    before = temp_files()
    code, headers, reads = wsgi_post(f"/p/{project.slug}/upload/", 186 * 1024 * 1024, cookies=CSRF_ONLY)
    assert code == 302 and "/accounts/login/" in headers["Location"]
    assert reads == 0 and temp_files() == before


def test_a_member_without_the_upload_role_is_refused_unread(client, project, annotator, outsider):
    for user in (annotator, outsider):
        client.force_login(user)
        code, _, reads = wsgi_post(f"/p/{project.slug}/upload/", 50 * 1024 * 1024,
                                   cookies=f"{session_cookie(client)}; {CSRF_ONLY}")
        assert (code, reads) == (404, 0)


def test_login_and_other_routes_have_the_small_limit(settings):
    code, headers, reads = wsgi_post("/accounts/login/", 133 * 1024 * 1024, cookies=CSRF_ONLY)
    assert (code, reads) == (413, 0)
    assert wsgi_post("/accounts/login/", settings.MAX_REQUEST_BYTES + 1)[0] == 413
    assert wsgi_post("/no/such/route/", settings.MAX_REQUEST_BYTES + 1)[0] == 413


def test_a_manager_may_send_a_large_body_to_the_upload_route_only(client, project, manager, settings):
    client.force_login(manager)
    token = "t" * 32
    cookies = session_cookie(client) + f"; csrftoken={token}"
    over_small = settings.MAX_REQUEST_BYTES + 1
    # Past the gate, the limit and the CSRF check, the view reads the body: the stream is touched.
    _, _, reads = wsgi_post(f"/p/{project.slug}/upload/", over_small, cookies=cookies,
                            extra={"HTTP_X_CSRFTOKEN": token})
    assert reads > 0
    code, _, reads = wsgi_post(f"/p/{project.slug}/upload/", settings.MAX_UPLOAD_BYTES + 2 * 1024 * 1024,
                               cookies=cookies)
    assert (code, reads) == (413, 0)
    assert wsgi_post(f"/p/{project.slug}/status.json", over_small, cookies=cookies)[0] == 413


def test_a_garbage_content_length_is_a_400(project):
    assert wsgi_post("/accounts/login/", 0, extra={"CONTENT_LENGTH": "lots"})[0] == 400


def test_a_file_over_the_cap_is_skipped_as_it_arrives_and_reported(client, project, manager, settings, media):
    settings.MAX_UPLOAD_BYTES = 64 * 1024
    client.force_login(manager)
    big = SimpleUploadedFile("huge.mp4", b"\0" * (200 * 1024), content_type="video/mp4")
    before = temp_files()
    response = client.post(reverse("annotations:clip-upload", args=[project.slug]), {"files": [big]}, follow=True)
    text = response.content.decode()
    assert "huge.mp4 is larger than the 64 KB limit: not imported" in text
    assert "Choose at least one video file" not in text
    assert not Clip.objects.filter(project=project).exists()
    assert temp_files() == before


def test_the_upload_gate_answers_nginx(project, manager, annotator, django_user_model):
    gate = reverse("upload-gate")
    target = {"HTTP_X_ORIGINAL_URI": f"/p/{project.slug}/upload/?x=1"}
    # nginx repeats the upload's method without its body or CSRF token: it must still get an answer.
    client = Client(enforce_csrf_checks=True)
    assert client.post(gate, **target).status_code == 401
    client.force_login(annotator)
    assert client.post(gate, **target).status_code == 403
    client.force_login(manager)
    assert client.post(gate, **target).status_code == 204
    assert client.get(gate, **target).status_code == 204
    assert client.post(gate, HTTP_X_ORIGINAL_URI="/accounts/login/").status_code == 403
    assert client.post(gate, HTTP_X_ORIGINAL_URI="/p/no-such-project/upload/").status_code == 403
    assert client.post(gate).status_code == 403
