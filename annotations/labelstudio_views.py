"""Label Studio: the managers' push and pull buttons, and the ML-backend endpoints Label Studio calls.

The ML backend is one set of routes per project, /ls/<slug>/{health,setup,predict,webhook}, speaking Label
Studio's ML-backend protocol. Label Studio's ML connection can send only HTTP Basic auth, so that is what these
routes take: the account must be a manager of that project (401 with a challenge for bad credentials, 404 for a
project the account does not manage, so other projects' names do not leak). A successful check is remembered
for a minute, keyed by a hash of the header and tied to the stored password hash, so /predict does not pay a
password hash per call and a password change still ends it. Browsers resend Basic credentials they once
used, so the POST routes take JSON only: a cross-site form cannot send that without CORS asking first.
CSRF does not apply to them (no cookie session is used).

/predict answers from stored predictions only (services.labelstudio.predict_results): no model runs here.
/webhook turns START_TRAINING into a training run (services.training.start_run).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from . import selectors
from .models import Role
from .services import labelstudio

AUTH_CACHE_S = 60
REALM = 'Basic realm="Affectloop ML backend", charset="UTF-8"'
SHOWN_LINES = 20
WEB_SYNC_LIMIT = 200  # clips a button pushes or pulls in the request; more go to a media worker


# --- the managers' buttons ------------------------------------------------------------------------------------
def _run(request, slug: str, step, verb: str):
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    if project.clips.count() > WEB_SYNC_LIMIT:
        # One request per clip to Label Studio: a large project goes to a media worker.
        labelstudio.sync_later(project, verb, actor=request.user)
        messages.info(request, f"Label Studio {verb} queued for {project.clips.count()} clips. Its summary goes to "
                               f"the audit log; `manage.py labelstudio_{verb} --project {project.slug}` prints every "
                               f"line.")
        return redirect("annotations:project-detail", slug=project.slug)
    try:
        report = step(project, actor=request.user)
    except labelstudio.LabelStudioError as exc:
        messages.error(request, f"Label Studio {verb} failed: {exc}")
        return redirect("annotations:project-detail", slug=project.slug)
    level = messages.WARNING if report.count("error") else messages.SUCCESS
    messages.add_message(request, level, f"Label Studio {verb}: {report.summary()}")
    problems = [o.text() for o in report.outcomes if o.status == "error"]
    for line in problems[:SHOWN_LINES]:
        messages.warning(request, line)
    if len(problems) > SHOWN_LINES:
        messages.warning(request, f"… and {len(problems) - SHOWN_LINES} more; `manage.py labelstudio_{verb} "
                                  f"--project {project.slug}` prints them all.")
    return redirect("annotations:project-detail", slug=project.slug)


@login_required
@require_POST
def push(request, slug):
    return _run(request, slug, labelstudio.push, "push")


@login_required
@require_POST
def pull(request, slug):
    return _run(request, slug, labelstudio.pull, "pull")


# --- the ML backend -------------------------------------------------------------------------------------------
def _challenge(message: str = "Authentication required") -> JsonResponse:
    response = JsonResponse({"error": message}, status=401)
    response["WWW-Authenticate"] = REALM
    return response


def _basic_credentials(request) -> tuple[str, str] | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep and username else None


def _cache_key(request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "").encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), header, hashlib.sha256).hexdigest()
    return f"affectloop:ls-basic:{digest}"


def _basic_user(request):
    """The active account named by the Basic header, or None. Failures count towards the login lockout."""
    credentials = _basic_credentials(request)
    if credentials is None:
        return None
    key = _cache_key(request)
    remembered = cache.get(key)
    if remembered:
        user = get_user_model().objects.filter(pk=remembered[0], is_active=True).first()
        if user is not None and hmac.compare_digest(user.password, remembered[1]):
            return user
        cache.delete(key)
    user = authenticate(request, username=credentials[0], password=credentials[1])
    if user is None or not user.is_active or getattr(request, "axes_locked_out", False):
        return None
    cache.set(key, (user.pk, user.password), AUTH_CACHE_S)
    return user


def _backend(view):
    """Basic auth, then the project the account manages (404 otherwise), then JSON-only POST bodies."""
    @csrf_exempt
    def wrapped(request, slug, *args, **kwargs):
        user = _basic_user(request)
        if user is None:
            return _challenge()
        try:
            project = selectors.project_for(user, slug, Role.MANAGER)
        except Http404:
            return JsonResponse({"error": "No such project"}, status=404)
        payload = {}
        if request.method == "POST":
            if request.content_type != "application/json":
                return JsonResponse({"error": "Send JSON (Content-Type: application/json)"}, status=415)
            try:
                payload = json.loads(request.body or b"{}")
            except (ValueError, UnicodeDecodeError):
                return JsonResponse({"error": "The body is not valid JSON"}, status=400)
            if not isinstance(payload, dict):
                return JsonResponse({"error": "The body must be a JSON object"}, status=400)
        return view(request, project, user, payload, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


@require_http_methods(["GET"])
@_backend
def health(request, project, user, payload):
    return JsonResponse({"status": "UP", "model_class": "Affectloop",
                         "model_version": labelstudio.backend_model_version(project)})


@require_http_methods(["POST"])
@_backend
def setup(request, project, user, payload):
    return JsonResponse({"model_version": labelstudio.backend_model_version(project)})


@require_http_methods(["POST"])
@_backend
def predict(request, project, user, payload):
    tasks = payload.get("tasks")
    if not isinstance(tasks, list):
        return JsonResponse({"error": "tasks must be a list"}, status=400)
    results = labelstudio.predict_results(project, tasks)
    return JsonResponse({"results": results, "model_version": labelstudio.backend_model_version(project)})


@require_http_methods(["POST"])
@_backend
def webhook(request, project, user, payload):
    from .services import training

    action = payload.get("action")
    if action != "START_TRAINING":
        # Label Studio also sends annotation events here when "train on submit" is on: nothing to do.
        return JsonResponse({"status": "ignored", "action": action}, status=200)
    try:
        run = training.start_run(project, actor=user)
    except training.TrainingError as exc:
        return JsonResponse({"status": "refused", "error": str(exc)}, status=409)
    return JsonResponse({"status": "queued", "run": run.pk}, status=201)


@require_http_methods(["GET"])
@_backend
def metrics(request, project, user, payload):
    return JsonResponse({})
