"""platform/nginx.conf, the file the compose stack ships, run for real in front of a live Django.

Only what cannot run outside Docker is changed (see `local_conf`): the upstream becomes the test's Django
server, the Docker DNS resolver goes, /data, /tmp and /var/log paths move into a temporary folder, and
nginx listens on a free loopback port. Through it we check that the TLS proxy's X-Forwarded-Proto reaches
Django (HSTS, no redirect loop), that request bodies are capped at 2 MB except on the upload route, that
the upload route asks the app (/_auth/upload) before nginx reads a byte of the body, and that media
served through X-Accel-Redirect keeps the headers that stop an uploaded file from acting as a page.

Each test starts its own Django server (pytest-django's LiveServer) under the settings it needs, rather
than the session-wide `live_server`: SecurityMiddleware reads the HSTS and redirect settings once, when
the server's handler loads its middleware.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from django.http import HttpResponse
from django.urls import path as route

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONF = ROOT / "platform" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
if NGINX is None:
    pytest.skip("nginx is not on PATH or in /usr/sbin (apt-get install nginx): platform/nginx.conf not run",
                allow_module_level=True)

MB = 1024 * 1024
UPSTREAM = "http://web:8000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_conf(shipped: str, *, upstream: str, port: int, root: Path, media_root: Path) -> str:
    """The shipped file with only the container-specific parts replaced; each must still be there."""
    replacements = [
        (UPSTREAM, upstream),
        ("listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;"),
        ("/var/log/nginx/", f"{root}/log/"),
        ("/tmp/", f"{root}/tmp/"),
        ("/data/media/", f"{media_root}/"),
        ("/data/static/", f"{root}/static/"),
    ]
    for old, _ in replacements:
        assert old in shipped, f"platform/nginx.conf no longer has {old!r}: update this test's substitutions"
    # One pass, so a replacement (tmp_path is under /tmp/ too) is never replaced again.
    mapping = dict(replacements)
    text = re.sub("|".join(map(re.escape, mapping)), lambda m: mapping[m.group(0)], shipped)
    text, dropped = re.subn(r"(?m)^\s*resolver\s[^;]*;\n", "", text)
    assert dropped == 1, "expected exactly one resolver line (Docker's DNS) in platform/nginx.conf"
    return text


class Nginx:
    def __init__(self, root: Path, upstream: str, media_root: Path):
        self.root, self.port = root, free_port()
        for sub in ("log", "tmp", "static"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.conf = root / "nginx.conf"
        self.conf.write_text(local_conf(SHIPPED_CONF.read_text(), upstream=upstream, port=self.port,
                                        root=root, media_root=media_root))
        # As root, nginx would run its workers as nobody, who cannot read the test's private folders.
        user = " user root root;" if os.geteuid() == 0 else ""
        self.args = [NGINX, "-p", str(root), "-c", str(self.conf), "-e", str(root / "log" / "startup.log"),
                     "-g", f"daemon off;{user}"]
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        logs = [self.root / "log" / name for name in ("startup.log", "error.log")]
        return "\n".join(p.read_text(errors="replace") for p in logs if p.exists())

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run([*self.args, "-t"], capture_output=True, text=True, timeout=30, check=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                pytest.fail(f"nginx exited with {self.proc.returncode}:\n{out}\n{self.error_log()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"nginx did not listen on {self.port}:\n{self.error_log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def through_nginx(tmp_path):
    """start(**settings) → an Nginx in front of a Django server started under those settings."""
    from django.test import override_settings
    from pytest_django.live_server_helper import LiveServer

    with contextlib.ExitStack() as stack:
        def start(**overrides) -> Nginx:
            media_root = Path(overrides.setdefault("MEDIA_ROOT", tmp_path / "media"))
            media_root.mkdir(parents=True, exist_ok=True)
            overrides.setdefault("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
            stack.enter_context(override_settings(**overrides))
            server = LiveServer("127.0.0.1:0")
            stack.callback(server.stop)
            nginx = Nginx(tmp_path / "nginx", server.url, media_root)
            nginx.start()
            stack.callback(nginx.stop)
            return nginx

        yield start


def session_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def status_before_body(nginx: Nginx, path: str, content_length: int, headers: dict | None = None) -> str:
    """Send only the headers of a POST with `Expect: 100-continue` and return the first status line. A server
    that means to read the body answers `100 Continue`; one that has decided already answers the status."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{nginx.port}", f"Content-Length: {content_length}",
             "Content-Type: application/octet-stream", "Expect: 100-continue", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def from_nginx(response: requests.Response) -> bool:
    """nginx's own error pages name it; Django's responses never do."""
    return "<center>nginx</center>" in response.text


def test_shipped_config_passes_nginx_t(tmp_path):
    nginx = Nginx(tmp_path, "http://127.0.0.1:9", tmp_path / "media")
    result = nginx.check()
    assert result.returncode == 0, result.stdout + result.stderr + nginx.error_log()


# --- HSTS: the TLS proxy's scheme reaches Django --------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_forwarded_https_gets_hsts_and_no_redirect_loop(through_nginx):
    nginx = through_nginx(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
                          SECURE_HSTS_SECONDS=3600, SECURE_SSL_REDIRECT=True)
    for path in ("/healthz", "/accounts/login/"):
        response = requests.get(nginx.url + path, headers={"X-Forwarded-Proto": "https"}, timeout=10,
                                allow_redirects=False)
        assert response.status_code == 200, (path, response.status_code, response.headers.get("Location"))
        assert response.headers["Strict-Transport-Security"] == "max-age=3600", path
    # Without a TLS proxy in front, nginx passes its own scheme: Django redirects once, to https.
    response = requests.get(nginx.url + "/healthz", timeout=10, allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"] == f"https://127.0.0.1:{nginx.port}/healthz"
    assert "Strict-Transport-Security" not in response.headers


# --- body limits ------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_bodies_over_2_mb_are_refused_by_nginx_outside_the_upload_route(through_nginx):
    nginx = through_nginx()
    big = requests.post(nginx.url + "/accounts/login/", data=b"x" * (3 * MB), timeout=30,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and from_nginx(big), big.text[:300]
    # Under the cap the request reaches Django (which refuses it for want of a CSRF token).
    small = requests.post(nginx.url + "/accounts/login/", data=b"x" * MB, timeout=30,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert small.status_code == 403 and not from_nginx(small), small.text[:300]


# --- the upload route, against a stand-in for the app's gate ------------------------------------------------
# The stand-in records what reaches it, so the test sees what nginx sends (and withholds) on each side.
CALLS: list[dict] = []


def _read_all(request) -> int:
    total = 0
    while chunk := request.read(MB):
        total += len(chunk)
    return total


def stub_gate(request):
    uri = request.headers.get("X-Original-URI", "")
    CALLS.append({"view": "gate", "method": request.method, "uri": uri, "body": _read_all(request),
                  "content_length": request.META.get("CONTENT_LENGTH", ""),
                  "cookie": request.COOKIES.get("stub"), "proto": request.headers.get("X-Forwarded-Proto")})
    if request.COOKIES.get("stub") != "member":
        return HttpResponse(status=401)
    slug = uri.split("/")[2]
    return HttpResponse(status={"allowed": 204, "forbidden": 403}.get(slug, 404))


def stub_upload(request, slug):
    received = _read_all(request)
    CALLS.append({"view": "upload", "slug": slug, "body": received})
    return HttpResponse(f"received {received}", content_type="text/plain")


def stub_other(request):
    CALLS.append({"view": "other", "body": _read_all(request)})
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    route("_auth/upload", stub_gate),
    route("p/<slug:slug>/upload/", stub_upload),
    route("p/<slug:slug>/other/", stub_other),
]


@pytest.fixture
def gate_stub(through_nginx):
    CALLS.clear()
    # No middleware: only nginx's behaviour is under test here.
    yield through_nginx(ROOT_URLCONF=__name__, MIDDLEWARE=[])
    CALLS.clear()


@pytest.mark.django_db(transaction=True)
def test_upload_gate_decides_before_nginx_reads_the_body(gate_stub):
    nginx = gate_stub
    # Anonymous: refused on the headers alone; nginx never sends 100 Continue, so the body never leaves.
    assert status_before_body(nginx, "/p/allowed/upload/", 10 * MB) == "HTTP/1.1 401 Unauthorized"
    assert [c["view"] for c in CALLS] == ["gate"]
    CALLS.clear()
    # The same with a client that sends the body straight away: refused, and the app gets none of it.
    response = requests.post(nginx.url + "/p/allowed/upload/?next=x", data=b"x" * (10 * MB), timeout=30,
                             headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 401
    # An auth subrequest is always a GET; the gate learns the target from X-Original-URI.
    assert CALLS == [{"view": "gate", "method": "GET", "uri": "/p/allowed/upload/?next=x", "body": 0,
                      "content_length": "", "cookie": None, "proto": "https"}]
    CALLS.clear()

    member = {"Cookie": "stub=member"}
    for slug, status in (("forbidden", 403), ("missing", 404)):
        status_line = status_before_body(nginx, f"/p/{slug}/upload/", 10 * MB, member)
        assert status_line.split(" ", 2)[1] == str(status)
        response = requests.post(f"{nginx.url}/p/{slug}/upload/", data=b"x" * (10 * MB), headers=member,
                                 timeout=30)
        assert response.status_code == status, slug
    assert {c["view"] for c in CALLS} == {"gate"}
    CALLS.clear()

    # Allowed: the large limit applies, and the whole body reaches the upload view (and only that view).
    response = requests.post(nginx.url + "/p/allowed/upload/", data=b"x" * (10 * MB), headers=member,
                             timeout=60)
    assert response.status_code == 200 and response.text == f"received {10 * MB}"
    assert [(c["view"], c["body"]) for c in CALLS] == [("gate", 0), ("upload", 10 * MB)]
    assert CALLS[0]["cookie"] == "member"


@pytest.mark.django_db(transaction=True)
def test_upload_route_alone_takes_large_bodies_up_to_500_mb(gate_stub):
    nginx = gate_stub
    member = {"Cookie": "stub=member"}
    # Over the upload cap: refused from Content-Length, before even the gate is asked.
    assert status_before_body(nginx, "/p/allowed/upload/", 501 * MB, member).split(" ")[1] == "413"
    assert CALLS == []
    # Any other route: the 2 MB cap, whoever asks.
    response = requests.post(nginx.url + "/p/allowed/other/", data=b"x" * (3 * MB), headers=member,
                             timeout=30)
    assert response.status_code == 413 and from_nginx(response)
    assert CALLS == []
    # The gate location cannot be reached from outside.
    response = requests.get(nginx.url + "/_auth/upload", headers={"X-Original-URI": "/p/allowed/upload/"},
                            timeout=10)
    assert response.status_code == 404 and CALLS == []


# --- the upload route, against the app's own gate ---------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_app_gate_refuses_an_upload_before_its_body_is_read(through_nginx, project, manager, outsider):
    nginx = through_nginx()
    upload = f"/p/{project.slug}/upload/"

    assert status_before_body(nginx, "/p/demo/upload/", 10 * MB).split(" ")[1] == "401"
    response = requests.post(nginx.url + "/p/demo/upload/", data=b"x" * (10 * MB), timeout=30)
    # Django's own answer to an anonymous upload would be a redirect to the login page.
    assert response.status_code == 401 and from_nginx(response), response.status_code
    response = requests.post(nginx.url + upload, data=b"x" * (10 * MB), timeout=30)
    assert response.status_code == 401 and from_nginx(response), response.status_code

    refused = requests.post(nginx.url + upload, data=b"x" * (10 * MB), timeout=30,
                            headers={"Cookie": session_cookie(outsider)})
    assert refused.status_code == 403 and from_nginx(refused), refused.status_code

    # A manager's upload goes through to the view, which answers with its usual redirect to the project page.
    token = "t" * 32
    response = requests.post(
        nginx.url + upload, timeout=60, allow_redirects=False,
        headers={"Cookie": f"{session_cookie(manager)}; csrftoken={token}", "Origin": nginx.url},
        data={"csrfmiddlewaretoken": token},
        files={"files": ("junk.mp4", b"\0" * (3 * MB), "video/mp4")})
    assert response.status_code == 302, (response.status_code, response.text[:300])
    assert response.headers["Location"] == f"/p/{project.slug}/"


# --- media through X-Accel-Redirect -----------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_media_through_x_accel_keeps_its_protective_headers(through_nginx, tmp_path, project, annotator,
                                                            outsider):
    from annotations.models import Clip

    media_root = tmp_path / "accel-media"
    nginx = through_nginx(MEDIA_ACCEL_PREFIX="/protected-media/", MEDIA_ROOT=media_root)
    files = {"clips/a.mp4": b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 8,
             "clips/evil.html": b"<script>1</script>"}
    clips = {}
    for name, content in files.items():
        (media_root / name).parent.mkdir(parents=True, exist_ok=True)
        (media_root / name).write_bytes(content)
        stem = Path(name).stem
        clips[name] = Clip.objects.create(project=project, file=name, original_name=Path(name).name,
                                          name=stem, sha256=stem[0] * 64, size_bytes=len(content))
    member = {"Cookie": session_cookie(annotator)}
    expected = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "private, no-store",
    }

    video = clips["clips/a.mp4"]
    response = requests.get(f"{nginx.url}/clips/{video.pk}/media", headers=member, timeout=10)
    assert response.status_code == 200 and response.content == files["clips/a.mp4"]
    assert "X-Accel-Redirect" not in response.headers
    assert response.headers["Content-Type"] == "video/mp4"
    for header, value in expected.items():
        assert response.headers.get(header) == value, (header, response.headers)
    # nginx answers Range requests itself (video seeking), with the same headers.
    partial = requests.get(f"{nginx.url}/clips/{video.pk}/media", headers={**member, "Range": "bytes=4-11"},
                           timeout=10)
    assert partial.status_code == 206 and partial.content == b"ftypmp42"
    for header, value in expected.items():
        assert partial.headers.get(header) == value, header

    # A file outside the app's media types stays a download, never a page.
    evil = clips["clips/evil.html"]
    response = requests.get(f"{nginx.url}/clips/{evil.pk}/media", headers=member, timeout=10)
    assert response.status_code == 200
    assert not response.headers["Content-Type"].startswith("text/html"), response.headers
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Content-Security-Policy"] == "sandbox"

    # Non-members get Django's 404; the internal location itself is not reachable from outside.
    assert requests.get(f"{nginx.url}/clips/{video.pk}/media", headers={"Cookie": session_cookie(outsider)},
                        timeout=10).status_code == 404
    assert requests.get(f"{nginx.url}/protected-media/clips/a.mp4", timeout=10).status_code == 404
