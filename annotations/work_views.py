"""The annotators' and reviewers' pages: the queue, the clip page and its JSON calls, review, history.

Thin: membership through selectors, every change through services.queue / annotating / reviews.
The clip page's script (static/annotations/clip.js) talks to the JSON views; a conflict is a 409 carrying the
stored version, a bad input a 400 with a message the page shows as it is.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import selectors
from .filters import ClipFilter
from .forms import MemberForm
from .models import Annotation, Clip, ClipLease, GoldAnswer, Membership, Review, Role
from .project_config import project_config
from .services import annotating, gold, prelabel, projects, queue, reviews, vocabulary


def _json_body(request) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise annotating.AnnotationError("the request is not JSON") from None
    if not isinstance(data, dict):
        raise annotating.AnnotationError("the request must be a JSON object")
    return data


def _version(data) -> int:
    try:
        return int(data.get("version"))
    except (TypeError, ValueError, OverflowError):
        raise annotating.AnnotationError("the request names no version") from None


def _state(annotation: Annotation) -> dict:
    # No id: a gold item's page (services.gold) must read like any other, and the page needs none.
    return {"version": annotation.version, "labels": annotation.labels, "status": annotation.status}


def _lease_lost(exc: annotating.LeaseLost) -> JsonResponse:
    return JsonResponse({"error": str(exc), "code": "lease"}, status=409)


def _conflict(exc: annotating.Conflict) -> JsonResponse:
    return JsonResponse({"error": str(exc), "stored": _state(exc.annotation)}, status=409)


def _bad(exc: Exception, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": str(exc)}, status=status)


# --- the queue --------------------------------------------------------------------------------------------
@login_required
@require_GET
def work(request, slug):
    project = selectors.project_for(request.user, slug)
    return render(request, "annotations/work.html", {
        "project": project,
        "counts": queue.queue_counts(request.user, project),
        "recent": queue.recent_work(request.user, project, limit=20),
        "can_review": selectors.has_role(request.user, project, Role.REVIEWER),
    })


@login_required
@require_POST
def next_clip(request, slug):
    kind = request.POST.get("kind", queue.ANNOTATE)
    project = selectors.project_for(request.user, slug, Role.REVIEWER if kind == queue.REVIEW else Role.ANNOTATOR)
    try:
        lease = queue.next_clip(request.user, project, kind)
    except queue.QueueError as exc:
        messages.error(request, str(exc))
        return redirect("annotations:work", slug=project.slug)
    if lease is None:
        messages.info(request, "Nothing in the queue for you right now." if kind == queue.ANNOTATE
                      else "Nothing waits for review right now.")
        return redirect("annotations:work", slug=project.slug)
    if kind == queue.REVIEW:
        return redirect("annotations:clip-review", clip_id=lease.clip_id)
    return redirect(reverse("annotations:clip-annotate", args=[lease.clip_id]) + "?take=1")


# --- the clip page ----------------------------------------------------------------------------------------
@login_required
@require_GET
@never_cache
def clip_annotate(request, clip_id):
    clip = selectors.clip_for(request.user, clip_id)
    project = clip.project
    mine = Annotation.objects.filter(clip=clip, annotator=request.user).first()
    editable, lease = False, None
    answer = gold.answer_for(request.user, clip) if mine is None else None
    # Opening a clip from a list is a preview: only the queue (?take=1) or one's own draft claims it, so a
    # manager looking at clips never takes annotators' places.
    taking = request.GET.get("take") == "1" or (mine is not None and mine.status == Annotation.Status.DRAFT)
    if answer is not None:
        # A gold item served to this person: the same page, its state kept by services.gold.
        lease = gold.take(answer)
        mine, editable = gold.as_annotation(answer), lease is not None
    elif taking:
        try:
            lease = queue.claim(request.user, clip)
        except queue.QueueError as exc:
            if mine is None:
                messages.error(request, str(exc))
                return redirect("annotations:work", slug=project.slug)
        else:
            mine = annotating.start(request.user, clip)
            editable = True
    config = project_config(project)
    mode = annotating.suggestion_mode(clip)
    vocab = vocabulary.project_vocabulary(project)
    suggestions = (selectors.model_suggestions(clip, vocab)
                   if mode != "hide" else {"chips": [], "backends": [], "fused_version": ""})
    page = {
        "annotation": _state(mine) if mine else {"id": None, "version": 0, "labels": [], "status": "none"},
        "editable": editable, "mode": mode,
        "fps": clip.fps or 25.0, "duration": clip.duration,
        "segments": (clip.metadata or {}).get("transcript_segments") or [],
        "leaseSeconds": config.annotation.lease_minutes * 60,
        "urls": {
            "save": reverse("annotations:clip-draft", args=[clip.pk]),
            "submit": reverse("annotations:clip-submit", args=[clip.pk]),
            "heartbeat": reverse("annotations:clip-heartbeat", args=[clip.pk]),
            "vocabulary": reverse("annotations:vocabulary", args=[project.slug]),
            "propose": reverse("annotations:vocabulary-propose", args=[project.slug]),
            "work": reverse("annotations:work", args=[project.slug]),
        },
        "chips": suggestions["chips"],
        "families": {lab["term"]: vocab.family(lab["term"]) or "unassigned" for lab in (mine.labels if mine else [])},
    }
    return render(request, "annotations/clip_annotate.html", {
        "project": project, "clip": clip, "annotation": mine, "page": page, "suggestions": suggestions,
        "mode": mode, "editable": editable, "lease": lease, "guidelines": _guidelines(config),
        "rejection": (selectors.rejection(mine) if answer is None and mine and mine.status == Annotation.Status.DRAFT
                      else None),
        "can_review": selectors.has_role(request.user, project, Role.REVIEWER),
    })


def _guidelines(config) -> str:
    """The project's guidelines as safe HTML: markdown rendered, then sanitised (no script, no handlers)."""
    import markdown
    import nh3

    text = config.annotation.guidelines or ""
    return nh3.clean(markdown.markdown(text, extensions=["sane_lists"])) if text.strip() else ""


def _write(request, clip_id, write, gold_write):
    """Run one write of the clip page's script; its errors become the JSON answers the script expects. A gold
    item's writes (the person has a gold answer and no annotation of the clip) go to services.gold."""
    clip = selectors.clip_for(request.user, clip_id)
    target = Annotation.objects.filter(clip=clip, annotator=request.user).select_related("clip").first()
    if target is None:
        target, write = gold.answer_for(request.user, clip), gold_write
    if target is None:
        raise Http404("No annotation of yours on this clip")
    try:
        data = _json_body(request)
        return write(target, data), None
    except annotating.Conflict as exc:
        return None, _conflict(exc)
    except annotating.LeaseLost as exc:
        return None, _lease_lost(exc)
    except annotating.AnnotationError as exc:
        return None, _bad(exc)


@login_required
@require_POST
def clip_draft(request, clip_id):
    saved, error = _write(request, clip_id, lambda annotation, data: annotating.save_draft(
        annotation, labels=data.get("labels"), base_version=_version(data), lead_time=data.get("lead_time")),
        lambda answer, data: gold.save_draft(answer, labels=data.get("labels"), base_version=_version(data)))
    if error:
        return error
    state = gold.state(saved) if isinstance(saved, GoldAnswer) else _state(saved)
    return JsonResponse({"annotation": state, "saved_at": saved.updated_at.isoformat()})


@login_required
@require_POST
def clip_submit(request, clip_id):
    done, error = _write(request, clip_id, lambda annotation, data: annotating.submit(
        annotation, labels=data.get("labels"), base_version=_version(data),
        idempotency_key=str(data.get("key") or ""), lead_time=data.get("lead_time")),
        lambda answer, data: gold.submit(answer, labels=data.get("labels"), base_version=_version(data),
                                         idempotency_key=str(data.get("key") or "")))
    if error:
        return error
    state = gold.state(done) if isinstance(done, GoldAnswer) else _state(done)
    # Claim the next clip here and answer with its page: one round trip fewer than a redirect through
    # next-annotate (bench/ui_latency.py measures submit → next clip ready).
    project = (done.gold.clip if isinstance(done, GoldAnswer) else done.clip).project
    lease = queue.next_clip(request.user, project)
    if lease is None:
        messages.success(request, "Submitted. Nothing more in the queue for you right now.")
        return JsonResponse({"annotation": state, "next": reverse("annotations:work", args=[project.slug])})
    return JsonResponse({"annotation": state,
                         "next": reverse("annotations:clip-annotate", args=[lease.clip_id]) + "?take=1"})


@login_required
@require_POST
def clip_heartbeat(request, clip_id):
    clip = selectors.clip_for(request.user, clip_id)
    kind = request.POST.get("kind", queue.ANNOTATE)
    if kind not in (queue.ANNOTATE, queue.REVIEW):
        return _bad(ValueError("unknown lease kind"))
    try:
        lease = (kind == queue.ANNOTATE and gold.heartbeat(request.user, clip)) or queue.heartbeat(
            request.user, clip, kind)
    except queue.QueueError as exc:
        return _bad(exc, status=409)
    return JsonResponse({"expires_at": lease.expires_at.isoformat()})


@login_required
@require_POST
def clip_skip(request, clip_id):
    clip = selectors.clip_for(request.user, clip_id)
    answer = gold.answer_for(request.user, clip)
    try:
        if answer is not None and answer.status == GoldAnswer.Status.OPEN:
            gold.skip(answer, request.POST.get("reason", ""))
        else:
            queue.skip(request.user, clip, request.POST.get("reason", ""))
    except queue.QueueError as exc:
        messages.error(request, str(exc))
        return redirect(reverse("annotations:clip-annotate", args=[clip.pk]) + "?take=1")
    messages.info(request, f"Skipped {clip.name}.")
    return next_clip(request, clip.project.slug)


@login_required
@require_GET
@never_cache
def next_annotate(request, slug):
    """Where the clip page goes after a submit: the next clip, or the queue page when there is none."""
    project = selectors.project_for(request.user, slug)
    lease = queue.next_clip(request.user, project)
    if lease is None:
        messages.success(request, "Submitted. Nothing more in the queue for you right now.")
        return redirect("annotations:work", slug=project.slug)
    return redirect(reverse("annotations:clip-annotate", args=[lease.clip_id]) + "?take=1")


# --- vocabulary -------------------------------------------------------------------------------------------
@login_required
@require_GET
def vocabulary_complete(request, slug):
    project = selectors.project_for(request.user, slug)
    return JsonResponse({"results": vocabulary.complete(project, request.GET.get("q", ""))})


@login_required
@require_POST
def vocabulary_propose(request, slug):
    project = selectors.project_for(request.user, slug)
    try:
        word = str(_json_body(request).get("word") or "")
        row = vocabulary.propose_term(project, word, actor=request.user)
    except (annotating.AnnotationError, vocabulary.VocabularyChangeError) as exc:
        return _bad(exc)
    return JsonResponse({"word": row.term, "term": (row.canonical.term if row.canonical_id else row.term),
                         "family": row.family, "pending": row.flagged})


# --- review -----------------------------------------------------------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
@never_cache
def clip_review(request, clip_id):
    clip = selectors.clip_for(request.user, clip_id, Role.REVIEWER)
    project = clip.project
    if request.method == "POST":
        return _review_decision(request, clip)
    try:
        queue.claim(request.user, clip, queue.REVIEW)
    except queue.QueueError as exc:
        messages.error(request, str(exc))
        return redirect("annotations:work", slug=project.slug)
    vocab = vocabulary.project_vocabulary(project)
    suggestions = selectors.model_suggestions(clip, vocab)
    submitted = list(clip.annotations.filter(status=Annotation.Status.SUBMITTED).select_related("annotator")
                     .order_by("submitted_at"))
    model_terms = {vocab.canonical(c["term"]) or c["term"] for c in suggestions["chips"]}
    requested = queue.review_request_open(clip)
    rows = []
    for annotation in submitted:
        terms = [lab["term"] for lab in annotation.labels]
        canon = {vocab.canonical(t) or t for t in terms}
        others = set()
        for other in submitted:
            if other.pk != annotation.pk:
                others |= {vocab.canonical(lab["term"]) or lab["term"] for lab in other.labels}
        verdicts = annotation.reviews.filter(annotation_version=annotation.version)
        # A manager's request for a (second) look opens every current version to reviewers who have not judged it.
        judged = (verdicts.filter(reviewer=request.user).exists() if requested else verdicts.exists())
        rows.append({"annotation": annotation, "judged": judged, "own": annotation.annotator_id == request.user.pk,
                     "labels": [{**lab, "canonical": vocab.canonical(lab["term"]) or lab["term"],
                                 "family": vocab.family(lab["term"]) or "unassigned",
                                 "with_model": (vocab.canonical(lab["term"]) or lab["term"]) in model_terms,
                                 "with_others": (vocab.canonical(lab["term"]) or lab["term"]) in others}
                                for lab in annotation.labels],
                     "model_only": sorted(model_terms - canon), "others_only": sorted(others - canon)})
    return render(request, "annotations/clip_review.html", {
        "project": project, "clip": clip, "rows": rows, "suggestions": suggestions, "requested": requested,
        "page": {"urls": {"heartbeat": reverse("annotations:clip-heartbeat", args=[clip.pk]),
                          "vocabulary": reverse("annotations:vocabulary", args=[project.slug])},
                 "fps": clip.fps or 25.0, "segments": (clip.metadata or {}).get("transcript_segments") or [],
                 "kind": "review", "leaseSeconds": project_config(project).annotation.lease_minutes * 60},
    })


def _review_decision(request, clip):
    annotation = Annotation.objects.filter(pk=request.POST.get("annotation"), clip=clip,
                                           status=Annotation.Status.SUBMITTED).first()
    if annotation is None:
        messages.error(request, "That annotation is no longer waiting for review.")
        return redirect("annotations:clip-review", clip_id=clip.pk)
    if annotation.annotator_id == request.user.pk:
        messages.error(request, "You cannot review your own annotation.")
        return redirect("annotations:clip-review", clip_id=clip.pk)
    version = request.POST.get("version", "")
    if not version.isdecimal() or len(version) > 9:
        messages.error(request, "The annotation changed since you opened it; look again.")
        return redirect("annotations:clip-review", clip_id=clip.pk)
    decision = request.POST.get("decision", "")
    fixed = None
    if decision == Review.Decision.FIX:
        try:
            fixed = annotating.clean_labels([w for w in request.POST.get("labels", "").split(",") if w.strip()])
        except annotating.AnnotationError as exc:
            messages.error(request, str(exc))
            return redirect("annotations:clip-review", clip_id=clip.pk)
    try:
        reviews.review(annotation, reviewer=request.user, decision=decision,
                       reason=request.POST.get("reason", "").strip(), fixed_labels=fixed, version=int(version))
    except reviews.ReviewError as exc:
        messages.error(request, str(exc))
        return redirect("annotations:clip-review", clip_id=clip.pk)
    except IntegrityError:  # one verdict per reviewer and version: a double click reviewed it already
        messages.info(request, "Already reviewed.")
    else:
        messages.success(request, f"{decision.capitalize()}: {annotation.annotator.get_username()} on {clip.name}.")
    if not queue.review_candidates(request.user, clip.project).filter(pk=clip.pk).exists():
        queue.release(request.user, clip, queue.REVIEW)
        lease = queue.next_clip(request.user, clip.project, queue.REVIEW)
        if lease is None:
            messages.info(request, "Nothing more waits for review.")
            return redirect("annotations:work", slug=clip.project.slug)
        return redirect("annotations:clip-review", clip_id=lease.clip_id)
    return redirect("annotations:clip-review", clip_id=clip.pk)


# --- history ----------------------------------------------------------------------------------------------
@login_required
@require_GET
def clip_history(request, clip_id):
    clip = selectors.clip_for(request.user, clip_id)
    # Annotators label independently: others' labels and verdicts only after their own submit, which on a gold
    # item is their submitted gold answer (shown to them as the feedback it then is).
    answer = None
    if not selectors.has_role(request.user, clip.project, Role.REVIEWER):  # gold is served to annotators only
        answer = gold.answer_for(request.user, clip)
        answer = answer if answer is not None and answer.status == GoldAnswer.Status.SUBMITTED else None
        if answer is None and not Annotation.objects.filter(clip=clip, annotator=request.user,
                                                            status=Annotation.Status.SUBMITTED).exists():
            raise Http404("No history to show yet")
    manager = selectors.has_role(request.user, clip.project, Role.MANAGER)
    return render(request, "annotations/clip_history.html", {
        "project": clip.project, "clip": clip, "events": annotating.history(clip), "manager": manager,
        "leases": queue.live(ClipLease.objects.filter(clip=clip)).select_related("user").order_by("kind", "pk"),
        "targets": ({k: queue.reassign_targets(clip.project, k) for k in (queue.ANNOTATE, queue.REVIEW)}
                    if manager else {}),
        "gold": gold.is_gold(clip) if manager else False, "gold_answer": answer,
    })


@login_required
@require_POST
def clip_gold(request, clip_id):
    """Managers: mark a verified clip as gold (its verified labels become the answer key), or unmark it."""
    clip = selectors.clip_for(request.user, clip_id, Role.MANAGER)
    if request.POST.get("action") == "unmark":
        if gold.unmark(clip, actor=request.user):
            messages.success(request, f"{clip.name} is no longer a gold clip.")
    else:
        try:
            gold.mark(clip, actor=request.user)
        except gold.GoldError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{clip.name} is now a gold clip.")
    return redirect("annotations:clip-history", clip_id=clip.pk)


@login_required
@require_POST
def clip_lease(request, clip_id, lease_id):
    """Managers: release one lease, or move it (and its holder's draft) to another member."""
    clip = selectors.clip_for(request.user, clip_id, Role.MANAGER)
    lease = ClipLease.objects.filter(clip=clip, pk=lease_id).select_related("user", "clip__project").first()
    if lease is None:
        messages.info(request, "That lease has already ended.")
        return redirect("annotations:clip-history", clip_id=clip.pk)
    if request.POST.get("action") == "reassign":
        pick = request.POST.get("user", "")
        to_user = (queue.reassign_targets(clip.project, lease.kind).filter(pk=int(pick)).first()
                   if pick.isdecimal() and len(pick) < 19 else None)
        if to_user is None:
            messages.error(request, "Choose a member of this project.")
            return redirect("annotations:clip-history", clip_id=clip.pk)
        try:
            queue.reassign(lease, to_user, actor=request.user)
        except queue.QueueError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{clip.name} moved from {lease.user.get_username()} to {to_user.get_username()}.")
    else:
        queue.release_lease(lease, actor=request.user)
        messages.success(request, f"Released {lease.user.get_username()}'s {lease.kind} lease on {clip.name}.")
    return redirect("annotations:clip-history", clip_id=clip.pk)


# --- members ----------------------------------------------------------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
def members(request, slug):
    """Managers add people by exact username, set roles and trust, and remove them, without the admin."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    form = MemberForm(request.POST or None, addable=selectors.addable_members(request.user))
    if request.method == "POST":
        action = request.POST.get("action", "set")
        if action == "review-work":
            pick = request.POST.get("membership", "")
            membership = (Membership.objects.filter(project=project, pk=int(pick)).first()
                          if pick.isdecimal() and len(pick) < 19 else None)
            if membership is None:
                raise Http404("No such member")
            outcome = gold.send_work_to_review(project, membership.user, actor=request.user)
            messages.success(request, f"Sent {outcome['sent']} of {membership.user.get_username()}'s clips to review"
                                      + (" and removed their trust." if outcome["untrusted"] else "."))
            return redirect("annotations:members", slug=project.slug)
        if action == "remove":
            membership = Membership.objects.filter(project=project, pk=request.POST.get("membership")).first()
            if membership is None:
                raise Http404("No such member")
            if membership.user_id == request.user.pk:
                messages.error(request, "You cannot remove yourself; ask another manager.")
            else:
                projects.remove_membership(project=project, user=membership.user, actor=request.user)
                messages.success(request, f"Removed {membership.user.get_username()}.")
            return redirect("annotations:members", slug=project.slug)
        if form.is_valid():
            user = form.cleaned_data["username"]
            if user.pk == request.user.pk and form.cleaned_data["role"] != Role.MANAGER:
                messages.error(request, "You cannot demote yourself; ask another manager.")
            else:
                projects.set_membership(project=project, user=user, role=form.cleaned_data["role"],
                                        trusted=form.cleaned_data["trusted"], actor=request.user)
                messages.success(request, f"{user.get_username()} is now {form.cleaned_data['role']} "
                                          f"{'(trusted)' if form.cleaned_data['trusted'] else ''}".strip() + ".")
                return redirect("annotations:members", slug=project.slug)
    rows = list(project.memberships.select_related("user").order_by("user__username"))
    accuracy = gold.gold_accuracy(project)
    by_user = {person["user_id"]: person for person in accuracy["annotators"]}
    for row in rows:
        row.gold = by_user.get(row.user_id)
    return render(request, "annotations/members.html", {"project": project, "rows": rows, "form": form,
                                                        "roles": Role.choices, "gold": accuracy})


# --- the managers' clip list --------------------------------------------------------------------------------
PAGE = 50


@login_required
@require_http_methods(["GET", "POST"])
def clip_list(request, slug):
    """Filter, sort by newest or by queue priority, page by keyset (no COUNT over the table), act on a
    selection. The filters are filters.ClipFilter, which the REST API shares."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    if request.method == "POST":
        ids = [int(x) for x in request.POST.getlist("clip") if x.isdecimal() and len(x) < 19]
        chosen = Clip.objects.filter(project=project, pk__in=ids)
        action = request.POST.get("action")
        if not ids:
            messages.error(request, "Select some clips first.")
        elif action == "release":
            n = queue.release_leases(chosen, actor=request.user)
            messages.success(request, f"Released {n} lease{'s' if n != 1 else ''}.")
        elif action == "review":
            outcome = queue.send_to_review(chosen, actor=request.user)
            messages.success(request, f"Sent {outcome['sent']} clip{'s' if outcome['sent'] != 1 else ''} to review.")
            if outcome["without_submissions"]:
                messages.info(request, f"{outcome['without_submissions']} had no submitted annotation yet: nothing "
                                       "to review, left in the annotation queue.")
        elif action == "rerun":
            messages.info(request, prelabel.rerun_prelabel(list(chosen.values_list("pk", flat=True)),
                                                           actor=request.user).message())
        else:
            messages.error(request, "Unknown action.")
        return redirect(request.get_full_path())
    clip_filter = ClipFilter(request.GET or None, queryset=project.clips.all(), project=project)
    clips = clip_filter.qs if clip_filter.is_bound and clip_filter.is_valid() else project.clips.all()
    order = request.GET.get("order", "new")
    page = selectors.clip_page(clips, order=order, after=request.GET.get("after", ""), size=PAGE)
    held = queue.holders(clip.pk for clip, _ in page["rows"])
    query = request.GET.copy()
    query.pop("after", None)
    return render(request, "annotations/clip_list.html", {
        "project": project, "filter": clip_filter, "more": page["more"],
        "rows": [(clip, labels, held.get(clip.pk, [])) for clip, labels in page["rows"]],
        "cursor": page["cursor"], "order": order, "query": query.urlencode(),
    })
