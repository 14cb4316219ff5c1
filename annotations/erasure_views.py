"""The managers' erasure pages: one clip from its history page, or every clip with a metadata value (a subject
id) after a preview. Thin: membership through selectors (404 for anyone but the project's managers), the
work in services.erasure, a typed confirmation before anything goes."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from . import selectors
from .models import Role
from .services import erasure


class EraseForm(forms.Form):
    key = forms.CharField(label="Metadata key", max_length=64, help_text="e.g. subject")
    value = forms.CharField(label="Value", max_length=300, help_text="e.g. s017")
    confirm = forms.CharField(label="Confirmation", required=False, max_length=40)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@login_required
@require_POST
def clip_erase(request, clip_id):
    """Erase one clip; the manager types its name to confirm."""
    clip = selectors.clip_for(request.user, clip_id, Role.MANAGER)
    if request.POST.get("confirm", "").strip() != clip.name:
        messages.error(request, "Type the clip's name exactly to erase it. Nothing was erased.")
        return redirect("annotations:clip-history", clip_id=clip.pk)
    try:
        result = erasure.erase(clip.project, {"names": [clip.name]}, actor=request.user)
    except erasure.ErasureError as exc:
        messages.error(request, str(exc))
        return redirect("annotations:clip-history", clip_id=clip.pk)
    # The message names no clip: the audit event holds its sha256 only, and so does what the page says.
    messages.success(request, f"Erased 1 clip and everything derived from it (audit event {result.event_id}).")
    return redirect("annotations:project-detail", slug=clip.project.slug)


@login_required
@require_http_methods(["GET", "POST"])
def project_erase(request, slug):
    """Every clip whose metadata KEY is VALUE: a preview (the dry run) first, then "ERASE <n>" to confirm."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    form = EraseForm(request.POST or None)
    context = {"project": project, "form": form, "plan": None}
    if request.method == "GET" or not form.is_valid():
        return render(request, "annotations/erase.html", context)
    where = (form.cleaned_data["key"], form.cleaned_data["value"])
    try:
        plan = erasure.plan(project, where=where)
    except erasure.ErasureError as exc:
        form.add_error(None, str(exc))
        return render(request, "annotations/erase.html", context)
    expected = f"ERASE {len(plan.clip_ids)}"
    context.update(plan=plan, expected=expected, lines=plan.describe())
    if not plan.clip_ids:
        form.add_error(None, "No clip of this project has that metadata value: nothing to erase.")
        context["plan"] = None
        return render(request, "annotations/erase.html", context)
    if request.POST.get("action") != "erase":
        return render(request, "annotations/erase.html", context)
    if form.cleaned_data["confirm"].strip() != expected:
        form.add_error("confirm", f"Type {expected} to confirm (the number of clips that match now).")
        return render(request, "annotations/erase.html", context)
    if len(plan.clip_ids) > erasure.WEB_SYNC_LIMIT:
        erasure.erase_later(project, where, actor=request.user)
        messages.success(request, f"Erasing {_plural(len(plan.clip_ids), 'clip')} in the background; the audit "
                                  f"log records it (clip.erased) once done.")
        return redirect("annotations:project-detail", slug=project.slug)
    try:
        result = erasure.erase(project, plan, actor=request.user)
    except erasure.ErasureError as exc:
        form.add_error(None, str(exc))
        return render(request, "annotations/erase.html", context)
    messages.success(request, f"Erased {_plural(result.clips, 'clip')} and everything derived from them "
                              f"(audit event {result.event_id}).")
    return redirect("annotations:project-detail", slug=project.slug)
