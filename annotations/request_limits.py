"""Request-body limits: a small one everywhere, the large one only on routes that take uploads, and those
routes decide who may send a body before a byte of it is read.

Django's CSRF middleware parses a POST body before any view runs, and the file upload handlers spool it to
disk, so a size check in the view comes too late. Here the decision is made on the headers: the middleware
answers 413 from Content-Length, and an upload route's gate (login and project role) runs first. The upload
handler checks Content-Length again and keeps a running total per file, dropping a file over the cap as its
chunks arrive, before anything writes them to disk.
nginx asks the same gate through /_auth/upload before it accepts an upload body (platform/nginx.conf).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

# (request, **url kwargs) → None when the request may send its body; raises Http404/PermissionDenied or
# returns a response otherwise. It must not read the body.
Gate = Callable[..., HttpResponse | None]


@dataclass(frozen=True)
class BodyPolicy:
    max_bytes: int
    gate: Gate


def accepts_uploads(max_bytes: Callable[[], int], gate: Gate):
    """Mark a view as an upload route: bodies up to max_bytes() for requests its gate lets through."""
    def mark(view):
        view.body_policy = lambda: BodyPolicy(max_bytes(), gate)
        return view
    return mark


def policy_for(path: str):
    """The upload policy and URL kwargs of the route at `path`, or (None, {}) for every other route."""
    try:
        match = resolve(path)
    except Resolver404:
        return None, {}
    policy = getattr(match.func, "body_policy", None)
    return (policy() if policy else None), match.kwargs


def login_gate(request: HttpRequest) -> HttpResponse | None:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    return None


def check_gate(request: HttpRequest, policy: BodyPolicy, kwargs: dict) -> HttpResponse | None:
    """Run a route's gate; a refusal becomes the response to send (never reading the body)."""
    from django.core.exceptions import PermissionDenied

    try:
        return login_gate(request) or policy.gate(request, **kwargs)
    except Http404:
        return HttpResponse("Not found", status=404, content_type="text/plain")
    except PermissionDenied:
        return HttpResponse("Forbidden", status=403, content_type="text/plain")


def human_size(n: int) -> str:
    return f"{n / 1024 ** 2:.0f} MB" if n >= 1024 ** 2 else f"{n / 1024:.0f} KB"


def _too_large(limit: int) -> HttpResponse:
    response = HttpResponse(f"Request body too large (limit {human_size(limit)})", status=413,
                            content_type="text/plain")
    return response


def _content_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw.strip():
        return 0
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


class RequestBodyLimitMiddleware:
    """Place after AuthenticationMiddleware: gates need request.user. Runs before any view middleware (CSRF
    included) gets to read the body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        length = _content_length(request)
        if length is None:
            return HttpResponse("Invalid Content-Length", status=400, content_type="text/plain")
        limit = settings.MAX_REQUEST_BYTES
        if length > 0 or request.method not in ("GET", "HEAD", "OPTIONS"):
            policy, kwargs = policy_for(request.path_info)
            if policy is not None:
                refused = check_gate(request, policy, kwargs)
                if refused is not None:
                    return refused
                limit = policy.max_bytes
        if length > limit:
            return _too_large(limit)
        request.body_limit = limit
        return self.get_response(request)


class LimitedUploadHandler(FileUploadHandler):
    """First in FILE_UPLOAD_HANDLERS: stops a body over the route's limit, and skips any one file over
    MAX_UPLOAD_BYTES as its chunks arrive, before the next handler writes them to disk. What was skipped is
    left on request.upload_refused, [{"file": name or None, "line": why}], for the view to report."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.request.upload_refused = []
        limit = getattr(self.request, "body_limit", settings.MAX_REQUEST_BYTES)
        # Behind RequestBodyLimitMiddleware this cannot be true; it holds where the middleware is missing.
        self.body_too_large = content_length > limit

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        if self.body_too_large:
            self.request.upload_refused.append(
                {"file": None, "line": "the upload is larger than the request limit; nothing was read"})
            raise StopUpload(connection_reset=True)
        self.file_total = 0

    def receive_data_chunk(self, raw_data, start):
        self.file_total += len(raw_data)
        if self.file_total > settings.MAX_UPLOAD_BYTES:
            self.request.upload_refused.append({"file": self.file_name, "line": (
                f"{self.file_name} is larger than the {human_size(settings.MAX_UPLOAD_BYTES)} limit: not imported")})
            raise SkipFile
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handler (memory or temporary file) builds the file
