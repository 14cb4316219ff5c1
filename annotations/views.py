"""Web pages. Thin: check membership through selectors, call one service, render."""

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
        "counts": selectors.clip_status_counts(project),
        "prelabel": selectors.prelabel_progress(project),
        "clips": selectors.recent_clips(project),
        "is_manager": selectors.has_role(request.user, project, Role.MANAGER),
        "upload_form": UploadForm(),
    })


@login_required
@require_GET
@never_cache
def project_status(request, slug):
    """Counts and per-clip state for the project page to poll while clips are being processed."""
    project = selectors.project_for(request.user, slug)
    clips = selectors.recent_clips(project).values("id", "status", "duration", "error", "thumbnail")
    return JsonResponse({
        "counts": selectors.clip_status_counts(project),
        "prelabel": selectors.prelabel_progress(project),
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
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    form = UploadForm(request.POST, request.FILES)
    refused = getattr(request, "upload_refused", [])
    for line in refused:
        messages.error(request, line)
    if not form.is_valid():
        for error in [] if refused else form.errors.get("files", ["Choose at least one video file."]):
            messages.error(request, error)
        return redirect("annotations:project-detail", slug=project.slug)
    files = form.cleaned_data["files"]
    single = len(files) == 1
    for uploaded in files:
        outcome = ingest.ingest_upload(project, uploaded, actor=request.user,
                                       transcript=form.cleaned_data["transcript"] if single else "",
                                       language=form.cleaned_data["language"])
        level = {"imported": messages.SUCCESS, "duplicate": messages.WARNING}.get(outcome.status, messages.ERROR)
        messages.add_message(request, level, outcome.line())
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
