"""Web pages. Thin: check membership through selectors, call one service, render."""

from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import selectors
from .forms import ProjectForm, UploadForm
from .http import serve_media
from .models import Role
from .request_limits import accepts_uploads, check_gate, policy_for
from .services import ingest, projects

# request_limits.LimitedUploadHandler's line for one file over the cap: the file's name leads it.


@require_GET
@never_cache
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def _can_create_projects(user) -> bool:
    return user.is_superuser or user.has_perm("annotations.add_project")


@login_required
@require_GET
def project_list(request):
    return render(request, "annotations/project_list.html", {
        "projects": selectors.project_summaries(request.user),
        "can_create": _can_create_projects(request.user),
    })


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request):
    if not _can_create_projects(request.user):
        raise PermissionDenied("You may not create projects.")
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = projects.create_project(name=form.cleaned_data["name"], creator=request.user,
                                              description=form.cleaned_data["description"])
        except projects.ProjectError as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("annotations:project-detail", slug=project.slug)
    return render(request, "annotations/project_form.html", {"form": form})


@login_required
@require_GET
def project_detail(request, slug):
    project = selectors.project_for(request.user, slug)
    return render(request, "annotations/project_detail.html", {
        "project": project,
        **{k: v for k, v in selectors.live_progress(project).items() if k in ("counts", "prelabel")},
        "clips": selectors.recent_clips(project),
        "is_manager": selectors.has_role(request.user, project, Role.MANAGER),
        "upload_form": UploadForm(),
    })


@login_required
@require_GET
@never_cache
def project_status(request, slug):
    """Counts and per-clip state for the project page to poll while clips are being processed. `busy` says
    whether more is coming: a clip is pending or processing, or waits to be queued or run for pre-labeling
    (the wait before a batch is queued shows "0 queued", so the queued count alone cannot say it)."""
    project = selectors.project_for(request.user, slug)
    progress = selectors.live_progress(project)
    counts, prelabel, busy = progress["counts"], progress["prelabel"], progress["busy"]
    clips = selectors.recent_clips(project).values("id", "status", "duration", "error", "thumbnail")
    return JsonResponse({
        "busy": busy,
        "counts": counts,
        "prelabel": prelabel,
        "clips": [{"id": c["id"], "status": c["status"], "duration": c["duration"], "error": c["error"],
                   "thumbnail": bool(c["thumbnail"])} for c in clips],
    })


def _may_upload(request, slug):
    selectors.project_for(request.user, slug, Role.MANAGER)  # 404 for anyone else, before the body is read


def _upload_request_bytes() -> int:
    return settings.MAX_UPLOAD_BYTES + 1024 * 1024  # the files plus the form's other fields


@accepts_uploads(_upload_request_bytes, _may_upload)
@login_required
@require_POST
def clip_upload(request, slug):
    """One result line per file: a bad file is rejected by name and never takes the others with it. The page's
    script asks for JSON (Accept: application/json or X-Requested-With: fetch) and gets
    {"results": [{"file", "status", "line"}], "errors": [...]}: 200 whenever a file got a line, 400 when
    nothing usable was sent. A plain form post gets the same lines as messages and a redirect."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    wants_json = ("application/json" in request.headers.get("Accept", "")
                  or request.headers.get("X-Requested-With") in ("fetch", "XMLHttpRequest"))
    form = UploadForm(request.POST, request.FILES)
    refused = getattr(request, "upload_refused", [])
    # Files over the size cap were dropped while the body was read (request_limits): only their lines remain.
    results = [{"file": r["file"], "status": "rejected", "line": r["line"]} for r in refused]
    errors = []
    if form.is_valid():
        sent = form.cleaned_data["files"]
        single = len(sent) == 1 and not refused
        for uploaded, problem in sent:
            if problem:
                outcome = ingest.Outcome("rejected", Path(uploaded.name or "upload").name[:200], problem)
            else:
                outcome = ingest.ingest_upload(project, uploaded, actor=request.user,
                                               transcript=form.cleaned_data["transcript"] if single else "",
                                               language=form.cleaned_data["language"])
            results.append({"file": outcome.display, "status": outcome.status, "line": outcome.line()})
    else:
        for field, field_errors in form.errors.items():
            if field == "files":
                errors += [] if refused else field_errors  # the refused lines already say why
            else:
                named = field in form.fields  # "__all__" is the form's own
                errors += [f"{form[field].label}: {e}" if named else e for e in field_errors]
    if wants_json:
        return JsonResponse({"results": results, "errors": errors},
                            status=400 if errors or not results else 200)
    for result in results:
        level = {"imported": messages.SUCCESS, "duplicate": messages.WARNING}.get(result["status"], messages.ERROR)
        messages.add_message(request, level, result["line"])
    for error in errors:
        messages.error(request, error)
    return redirect("annotations:project-detail", slug=project.slug)


@login_required
@require_GET
def clip_media(request, clip_id):
    clip = selectors.clip_for(request.user, clip_id)
    return serve_media(request, clip.file.name, download_name=clip.original_name.rsplit("/", 1)[-1])


@login_required
@require_GET
def clip_thumbnail(request, clip_id):
    clip = selectors.clip_for(request.user, clip_id)
    if not clip.thumbnail:
        raise Http404("No thumbnail yet")
    return serve_media(request, clip.thumbnail.name)


@csrf_exempt  # nginx's auth subrequest repeats the upload's method without its body or token; it changes nothing
@never_cache
def upload_gate(request):
    """For nginx's auth_request: may this session send a body to X-Original-URI? 204 yes, 401 not logged in,
    403 otherwise (no upload route there, no role in the project)."""
    path = unquote(urlsplit(request.headers.get("X-Original-URI", "")).path)
    prefix = request.META.get("SCRIPT_NAME", "").rstrip("/")
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix):]  # the original URI carries the mount prefix; the URLconf does not
    policy, kwargs = policy_for(path)
    if policy is None:
        return HttpResponse(status=403)
    if not request.user.is_authenticated:
        return HttpResponse(status=401)
    return HttpResponse(status=204 if check_gate(request, policy, kwargs) is None else 403)
