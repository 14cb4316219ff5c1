"""The managers' exports page: request a dataset export of a snapshot (or of the verified clips frozen now),
watch it build, download its zip while it lasts.

Thin: membership through selectors.project_for(..., Role.MANAGER) (404 for anyone else, and for another
project's export by id), every change through services.exports, its errors shown as messages. The table of
exports is a fragment that htmx fetches again every 2 s while one is queued or running.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseGone, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from . import selectors
from .filters import ClipFilter
from .http import serve_media
from .models import DatasetSnapshot, Export, Role
from .services import exports

LIST_LIMIT = 100
LIVE = (Export.Status.QUEUED, Export.Status.RUNNING)
BADGES = {"done": "state-ready", "failed": "state-failed", "queued": "run-queued", "running": "run-running"}


class ExportForm(forms.Form):
    snapshot = forms.ChoiceField(label="Snapshot", required=False)
    format = forms.ChoiceField(choices=[(name, f"{name} · {Export.Format(value).label}")
                                        for name, value in exports.FORMATS.items()])
    media = forms.ChoiceField(choices=[("link", "link the files (absolute paths)"),
                                       ("include", "include the files in the zip")], initial="link",
                              widget=forms.RadioSelect)
    pseudonymise = forms.BooleanField(required=False, label="Pseudonymise annotator and reviewer ids")
    filters = forms.CharField(required=False, max_length=1000, label="Filters",
                              help_text="As in the clip list's address, e.g. split=train&label=anxious")

    def __init__(self, *args, snapshots=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].choices = [("", "Everything verified now (freezes a snapshot)")] + [
            (str(s.pk), f"{s.name} · {s.clip_count} clips") for s in snapshots]

    def options(self) -> dict:
        query = QueryDict(self.cleaned_data["filters"].lstrip("?"))
        return {"filters": {key: query[key] for key in query}, "media": self.cleaned_data["media"],
                "pseudonymise": self.cleaned_data["pseudonymise"]}


def _export_for(project, export_id) -> Export:
    export = Export.objects.select_related("snapshot").filter(snapshot__project=project, pk=export_id).first()
    if export is None:
        raise Http404("No such export")
    return export


def _rows(project) -> list[dict]:
    now = timezone.now()
    found = (Export.objects.filter(snapshot__project=project).select_related("snapshot", "created_by")
             .order_by("-created_at", "-pk")[:LIST_LIMIT])
    return [{"export": e, "name": exports.FORMAT_NAMES.get(e.format, e.format), "badge": BADGES.get(e.status, ""),
             "filters": urlencode(e.options.get("filters") or {}),
             "downloadable": exports.downloadable(e, now)} for e in found]


def _live_context(project) -> dict:
    rows = _rows(project)
    return {"project": project, "rows": rows, "is_live": any(r["export"].status in LIVE for r in rows)}


def _context(request, project, form=None) -> dict:
    snapshots = list(DatasetSnapshot.objects.filter(project=project).order_by("-created_at")[:50])
    if form is None:
        initial = {"filters": urlencode([(key, request.GET[key]) for key in request.GET
                                         if key in ClipFilter.base_filters and request.GET[key]])}
        form = ExportForm(snapshots=snapshots, initial=initial)
    return {**_live_context(project), "snapshots": snapshots, "form": form,
            "download_days": settings.EXPORT_DOWNLOAD_DAYS}


@login_required
@require_http_methods(["GET", "POST"])
def export_list(request, slug):
    """Snapshots and exports of a project; POST requests an export."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    if request.method == "GET":
        return render(request, "annotations/exports.html", _context(request, project))
    snapshots = DatasetSnapshot.objects.filter(project=project).order_by("-created_at")[:50]
    form = ExportForm(request.POST, snapshots=snapshots)
    if not form.is_valid():
        messages.error(request, "No export was requested: check the form below.")
        return render(request, "annotations/exports.html", _context(request, project, form), status=400)
    snapshot = form.cleaned_data["snapshot"]
    try:
        export = exports.export_project(project, form.cleaned_data["format"], form.options(),
                                        snapshot_id=int(snapshot) if snapshot else None, actor=request.user)
    except exports.ExportError as exc:
        messages.error(request, str(exc))
        return redirect("annotations:exports", slug=project.slug)
    if export.status == Export.Status.DONE:
        messages.success(request, f"Export #{export.pk} is ready to download.")
    else:
        messages.success(request, f"Export #{export.pk} is {export.get_status_display().lower()}.")
    return redirect("annotations:exports", slug=project.slug)


@login_required
@require_GET
@never_cache
def export_list_live(request, slug):
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    return render(request, "annotations/_exports_live.html", _live_context(project))


@login_required
@require_GET
def export_download(request, slug, export_id):
    """The zip, to the project's managers only, while the export is done and not expired (410 after)."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    export = _export_for(project, export_id)
    if not exports.downloadable(export):
        return HttpResponseGone("This export is not available for download: it is not built, or it expired. "
                                "Request it again on the exports page.", content_type="text/plain")
    name = f"{export.snapshot.name}-{exports.FORMAT_NAMES.get(export.format, export.format)}.zip"
    return serve_media(request, export.file.name, download_name=name)
