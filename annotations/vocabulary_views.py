"""The managers' vocabulary pages: the terms and the proposals, edits with a preview, the split review lists,
near-duplicate suggestions, and the vocabulary as CSV.

Thin: membership through selectors.project_for(..., Role.MANAGER) (404 for anyone else), every change through
services.vocabulary_governance, whose errors are shown as they are. An edit is posted twice: first it is
previewed (nothing changes), then confirmed from the preview; the service checks it again under a lock.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ml.vocabulary import FAMILIES, UNASSIGNED, VALENCES

from . import selectors
from .models import EmotionTerm, Role
from .services import queue, vocabulary
from .services import vocabulary_governance as governance

CHOICES = {"families": sorted(FAMILIES - {UNASSIGNED}), "valences": sorted(VALENCES)}
ACTIONS = ("merge", "rename", "approve", "refuse", "split")


def _manager_project(request, slug):
    return selectors.project_for(request.user, slug, Role.MANAGER)


def _terms(project, query: str) -> list[dict]:
    rows = dict(EmotionTerm.objects.filter(project=project, kind="term").values_list("term", "source"))
    out = []
    for term in vocabulary.project_vocabulary(project).terms():
        if query and not any(query in form for form in term.surface_forms):
            continue
        out.append({"term": term.term, "family": term.family, "valence": term.valence,
                    "word_forms": term.word_forms, "synonyms": term.synonyms, "source": rows.get(term.term, "")})
    return sorted(out, key=lambda t: t["term"])


@login_required
@require_GET
@never_cache
def vocabulary_manage(request, slug):
    project = _manager_project(request, slug)
    query = " ".join(request.GET.get("q", "").strip().lower().split())[:64]
    proposed = list(EmotionTerm.objects.filter(project=project, kind="term", flagged=True).order_by("term"))
    context = {"project": project, "proposed": proposed, "terms": _terms(project, query), "q": query,
               "splits": governance.splits(project), "choices": CHOICES}
    return render(request, "annotations/vocabulary.html", context)


def _split_params(post) -> dict:
    """"name, family, valence" per line, and "variant -> new term" per line, as the service takes them."""
    new_terms, moves = [], {}
    for line in post.get("new_terms", "").splitlines():
        if line.strip():
            parts = [p.strip() for p in line.split(",")]
            new_terms.append({"term": parts[0], "family": parts[1] if len(parts) > 1 else "",
                              "valence": parts[2] if len(parts) > 2 else ""})
    for line in post.get("moves", "").splitlines():
        if line.strip():
            variant, sep, destination = line.partition("->")
            if not sep:
                raise governance.GovernanceError(f"write each move as 'word -> new term', not {line.strip()[:40]!r}")
            moves[variant.strip()] = destination.strip()
    return {"term": post.get("term", ""), "new_terms": new_terms, "moves": moves}


def _params(action: str, post) -> dict:
    if action == "merge":
        return {"source": post.get("source", ""), "target": post.get("target", "")}
    if action == "rename":
        return {"term": post.get("term", ""), "new_name": post.get("new_name", "")}
    if action == "approve":
        return {"term": post.get("term", ""), "family": post.get("family", ""), "valence": post.get("valence", "")}
    if action == "refuse":
        return {"term": post.get("term", "")}
    return _split_params(post)


@login_required
@require_POST
def vocabulary_edit(request, slug):
    """Preview an edit (action=…, without confirm) or make it (confirm=1, from the preview's form)."""
    project = _manager_project(request, slug)
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        messages.error(request, "Unknown vocabulary edit.")
        return redirect("annotations:vocabulary-manage", slug=project.slug)
    try:
        plan = governance.PLANNERS[action](project, **_params(action, request.POST))
        if request.POST.get("confirm") != "1":
            return render(request, "annotations/vocabulary_preview.html",
                          {"project": project, "plan": plan, "post": _echo(request.POST)})
        event = governance.apply(project, plan, actor=request.user)
    except governance.GovernanceError as exc:
        messages.error(request, f"{exc}. Nothing was changed.")
        return redirect("annotations:vocabulary-manage", slug=project.slug)
    project.refresh_from_db(fields=["vocabulary_version"])
    messages.success(request, f"{plan.description}: done ({plan.impact.describe()}). The vocabulary is now "
                              f"version {project.vocabulary_version}.")
    if action == "split":
        return redirect("annotations:vocabulary-split-review", slug=project.slug, event_id=event.pk)
    return redirect("annotations:vocabulary-manage", slug=project.slug)


def _echo(post) -> list[tuple[str, str]]:
    """The edit's fields, for the preview's hidden inputs (escaped by the template)."""
    return [(key, post.get(key, "")) for key in ("action", "source", "target", "term", "new_name", "family",
                                                 "valence", "new_terms", "moves") if key in post]


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
def vocabulary_split_review(request, slug, event_id):
    """The labels a split left to reassign: each clip with the words it uses, linked to its history. A POST
    sends every listed clip with submissions to review."""
    project = _manager_project(request, slug)
    try:
        event = governance.split_event(project, event_id)
    except governance.GovernanceError as exc:
        raise Http404(str(exc)) from None
    if request.method == "POST":
        outcome = queue.send_to_review(governance.split_review_clips(project, event), actor=request.user)
        messages.success(request, f"Sent {outcome['sent']} clip{'' if outcome['sent'] == 1 else 's'} to review "
                                  f"({outcome['without_submissions']} without a submission).")
        return redirect("annotations:vocabulary-split-review", slug=project.slug, event_id=event.pk)
    entries, total = governance.split_review(project, event)
    return render(request, "annotations/vocabulary_split.html",
                  {"project": project, "event": event, "entries": entries, "total": total,
                   "limit": governance.REVIEW_LIST_LIMIT})


@login_required
@require_GET
@never_cache
def vocabulary_suggestions(request, slug):
    project = _manager_project(request, slug)
    wheel = governance.wheel_for_suggestions()
    return render(request, "annotations/vocabulary_suggestions.html",
                  {"project": project, "suggestions": governance.suggestions(project, wheel=wheel),
                   "wheel": wheel is not None, "dismissed": governance.dismissed(project)})


@login_required
@require_POST
def vocabulary_dismiss(request, slug):
    """The buttons "Not the same" on a suggestion (not suggested again) and "Suggest again" on a dismissed pair."""
    project = _manager_project(request, slug)
    if request.POST.get("action") == "restore":
        try:
            restored = governance.restore(project, int(request.POST.get("id", "")), actor=request.user)
        except ValueError:
            restored = False
        if not restored:
            raise Http404("no such dismissed pair")
        messages.success(request, "That pair can be suggested again.")
    else:
        first, second = request.POST.get("source", ""), request.POST.get("target", "")
        try:
            governance.dismiss(project, first, second, actor=request.user)
        except governance.GovernanceError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{first} and {second} will not be suggested again.")
    return redirect("annotations:vocabulary-suggestions", project.slug)


@login_required
@require_GET
def vocabulary_export(request, slug):
    project = _manager_project(request, slug)
    response = HttpResponse(governance.export_csv(project), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (f'attachment; filename="{project.slug}-vocabulary-'
                                       f'v{project.vocabulary_version}.csv"')
    return response


@login_required
@require_http_methods(["GET", "POST"])
def vocabulary_import(request, slug):
    """Upload a CSV: the preview lists what it adds, changes and removes and the labels it affects; the
    confirmation posts the same text back. All or nothing."""
    project = _manager_project(request, slug)
    context = {"project": project, "errors": [], "plan": None, "text": ""}
    if request.method == "GET":
        return render(request, "annotations/vocabulary_import.html", context)
    upload = request.FILES.get("file")
    data = upload.read(governance.CSV_MAX_BYTES + 1) if upload else request.POST.get("text", "").encode("utf-8")
    if not data:
        context["errors"] = ["Choose a CSV file."]
        return render(request, "annotations/vocabulary_import.html", context, status=400)
    try:
        if request.POST.get("confirm") == "1":
            plan = governance.import_csv(project, data, actor=request.user)
            project.refresh_from_db(fields=["vocabulary_version"])
            messages.success(request, f"Imported: {len(plan.added)} added, {len(plan.changed)} changed, "
                                      f"{len(plan.removed)} removed ({plan.impact.describe()}). The vocabulary is "
                                      f"now version {project.vocabulary_version}.")
            return redirect("annotations:vocabulary-manage", slug=project.slug)
        context["plan"] = governance.plan_import(project, data)
        context["text"] = data.decode("utf-8-sig")
    except governance.ImportErrors as exc:
        context["errors"] = exc.errors
        return render(request, "annotations/vocabulary_import.html", context, status=400)
    return render(request, "annotations/vocabulary_import.html", context)
