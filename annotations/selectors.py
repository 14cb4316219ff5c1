"""Reads, with the membership rule in one place: every object a user sees goes through here."""

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.http import Http404

from .models import ROLE_RANK, Clip, Membership, Project, Review, Role

# Label states in which a clip still needs humans: pre-labeling and the annotation queue work on these.
NEEDS_HUMANS = (Clip.LabelState.UNLABELED, Clip.LabelState.PRELABELED, Clip.LabelState.IN_PROGRESS)


def needs_humans(clips: QuerySet[Clip]) -> QuerySet[Clip]:
    return clips.filter(label_state__in=NEEDS_HUMANS)


def project_by_ref(ref: str) -> Project | None:
    """A project by its name or its slug: what every --project option accepts."""
    return Project.objects.filter(name=ref).first() or Project.objects.filter(slug=ref).first()


def managed_projects(user) -> QuerySet[Project]:
    """The projects a user manages (all of them for a superuser): the admin's scope."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user, memberships__role=Role.MANAGER)


# --- the verified rule ------------------------------------------------------------------------------------
def _latest_review(field: str):
    return Subquery(Review.objects.filter(annotation__clip=OuterRef("pk")).order_by("-created_at", "-id")
                    .values(field)[:1])


def with_verdict(clips: QuerySet[Clip]) -> QuerySet[Clip]:
    """Annotates each clip with its latest review: `verdict` (accept, fix, reject or None), `verdict_labels`
    (the reviewer's labels for a fix) and `verdict_annotation` (the reviewed annotation's id)."""
    return clips.annotate(verdict=_latest_review("decision"), verdict_labels=_latest_review("fixed_labels"),
                          verdict_annotation=_latest_review("annotation_id"))


def verified_clips(clips: QuerySet[Clip]) -> QuerySet[Clip]:
    """The one rule for "verified": the latest review of any of the clip's annotations is an accept or a
    fix. A later reject un-verifies it. Retraining, export, reports and active learning all use this."""
    return with_verdict(clips).filter(verdict__in=[Review.Decision.ACCEPT, Review.Decision.FIX])


def verified_labels(project: Project, clips: QuerySet[Clip] | None = None) -> dict[int, list[str]]:
    """clip id → its verified label words, in order: the accepted annotation's labels, or the reviewer's
    labels for a fix. The clip's other annotations are agreement data only."""
    from .models import Annotation

    rows = list(verified_clips(clips if clips is not None else project.clips.all())
                .values_list("pk", "verdict", "verdict_labels", "verdict_annotation"))
    annotated = dict(Annotation.objects.filter(pk__in=[r[3] for r in rows if r[1] == Review.Decision.ACCEPT])
                     .values_list("pk", "labels"))
    out = {}
    for clip_id, verdict, fixed, annotation_id in rows:
        chosen = fixed if verdict == Review.Decision.FIX else annotated.get(annotation_id, [])
        out[clip_id] = [x["term"] if isinstance(x, dict) else str(x) for x in chosen or []]
    return out


def co_members(user):
    """The users a non-superuser may see: themselves and the members of the projects they manage."""
    from django.contrib.auth import get_user_model

    managed = managed_projects(user)
    return get_user_model().objects.filter(Q(pk=user.pk) | Q(memberships__project__in=managed)).distinct()


def addable_members(user):
    """Whom a manager may add to a project: any active ordinary account (that is how annotators are recruited),
    but never a superuser, nor another project's staff (their pages would then open to this manager)."""
    from django.contrib.auth import get_user_model

    managed = managed_projects(user)
    return (get_user_model().objects.filter(is_active=True, is_superuser=False)
            .filter(Q(is_staff=False) | Q(memberships__project__in=managed)).distinct())


def clip_split(clip: Clip, config=None) -> str:
    """train, val or test: the one split rule (ml.splits) on the clip's group value or its sha256."""
    from ml.splits import split_of

    from .project_config import project_config

    training = (config or project_config(clip.project)).training
    group = training.group_key and (clip.metadata or {}).get(training.group_key)
    ratios = training.split
    return split_of(str(group) if group not in (None, "") else clip.sha256, ratios.train, ratios.val, ratios.test)


def projects_for(user) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def membership(user, project: Project) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, project=project).first()


def has_role(user, project: Project, role: str = Role.ANNOTATOR) -> bool:
    if user.is_authenticated and user.is_superuser:
        return True
    m = membership(user, project)
    return m is not None and ROLE_RANK[m.role] >= ROLE_RANK[role]


def project_for(user, slug: str, role: str = Role.ANNOTATOR) -> Project:
    """The project, if the user is a member with at least `role`; otherwise 404 (no existence leak)."""
    project = Project.objects.filter(slug=slug).first()
    if project is None or not has_role(user, project, role):
        raise Http404("No such project")
    return project


def clip_for(user, clip_id: int, role: str = Role.ANNOTATOR) -> Clip:
    clip = Clip.objects.select_related("project").filter(pk=clip_id).first()
    if clip is None or not has_role(user, clip.project, role):
        raise Http404("No such clip")
    return clip


def recent_clips(project: Project, limit: int = 200) -> QuerySet[Clip]:
    """The project page's clip list: the newest first."""
    return project.clips.order_by("-id")[:limit]


def clip_status_counts(project: Project) -> dict[str, int]:
    rows = project.clips.values("status").annotate(n=Count("id"))
    counts = {status: 0 for status in Clip.Status.values}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def project_summaries(user):
    return projects_for(user).annotate(
        clip_count=Count("clips", distinct=True),
        ready_count=Count("clips", filter=Q(clips__status=Clip.Status.READY), distinct=True),
    ).order_by("name")


def prelabel_progress(project: Project) -> dict:
    """Pre-labeling state of the project's ready clips, machine throughput, and the latest errors; live_progress
    adds how many are pre-labeled (split by what the models answered)."""
    from datetime import timedelta

    from django.db.models import Exists, OuterRef
    from django.utils import timezone

    from .models import Prediction

    ready = project.clips.filter(status=Clip.Status.READY)
    fused = Prediction.objects.filter(clip__project=project, backend="fused")
    since = timezone.now() - timedelta(minutes=10)
    recent = fused.filter(created_at__gte=since).count()
    has_fused = Exists(Prediction.objects.filter(clip=OuterRef("pk"), backend="fused"))
    from .project_config import ConfigError, project_config

    try:
        configured = bool(project_config(project).backends())
    except ConfigError:
        configured = False
    return {
        "configured": configured,
        "queued": needs_humans(ready.filter(prelabel_queued_at__isnull=False, prelabel_error="")).exclude(
            has_fused).count(),
        "failed": ready.exclude(prelabel_error="").count(),
        "ready": ready.count(),
        "per_minute_10min": round(recent / 10.0, 2),
        "errors": list(ready.exclude(prelabel_error="").order_by("-updated_at")
                       .values("id", "name", "prelabel_error")[:5]),
    }


# --- the clip page ----------------------------------------------------------------------------------------
def model_suggestions(clip: Clip, vocabulary=None) -> dict:
    """What the models said about a clip, for its page: the fused labels as chips (each with the backends
    that proposed it, their scores and model versions, and the term's family), and each backend's own
    answer, with empty or flagged answers marked as such rather than shown as labels."""
    from .models import Prediction

    latest: dict[str, Prediction] = {}
    for row in Prediction.objects.filter(clip=clip).order_by("-created_at", "-id"):
        latest.setdefault(row.backend, row)
    versions = {b: p.model_version for b, p in latest.items()}

    def family(term):
        return (vocabulary.family(term) if vocabulary is not None else None) or "unassigned"

    fused = latest.get("fused")
    chips = []
    for lab in (fused.labels if fused else []):
        if not isinstance(lab, dict) or not lab.get("term"):
            continue
        support = [{"backend": s.get("backend"), "score": s.get("score"),
                    "model_version": versions.get(s.get("backend"), "")} for s in lab.get("support") or []]
        chips.append({"term": lab["term"], "score": lab.get("score"), "family": family(lab["term"]),
                      "support": support})
    backends = []
    for name, row in sorted(latest.items()):
        if name == "fused":
            continue
        labels = [{"term": lab["term"], "score": lab.get("score"), "family": family(lab["term"])}
                  for lab in row.labels if isinstance(lab, dict) and lab.get("term")]
        backends.append({"backend": name, "model_version": row.model_version, "labels": labels,
                         "flags": list(row.flags or []), "empty": not labels})
    return {"chips": chips, "backends": backends, "fused_version": fused.model_version if fused else ""}


def rejection(annotation) -> Review | None:
    """The review that sent this draft back to its author, if the last verdict on it was a reject."""
    if annotation is None:
        return None
    last = annotation.reviews.order_by("-created_at", "-id").first()
    return last if last is not None and last.decision == Review.Decision.REJECT else None


# How long a busy project's progress is reused, at least (the page polls every 1.5 s or more while busy).
PROGRESS_CACHE_SECONDS = 3


def live_progress(project: Project) -> dict:
    """What the project page shows and polls: clip counts, pre-labeling progress (an empty or flagged answer
    counted as such, not as pre-labeled; clips waiting to be queued) and `busy`, whether more is coming: a
    clip is pending or processing, or waits to be queued or run for pre-labeling (the wait before a batch
    is queued shows "0 queued", so the queued count alone cannot say it).

    Each answer costs several counts over the project's clips and predictions, so a busy answer is kept in
    Django's cache and every poll of the project meanwhile (all its open pages) reuses it: for
    PROGRESS_CACHE_SECONDS, or twice as long as it took to compute if that is longer, so that polling a huge
    project keeps the database busy a third of the time at most. While work goes on, the figures are that
    old at most. An idle answer is never kept: the page stops polling on it, so it must be fresh. A poll
    after an upload then sees the new clips at once, and polling stops only on a freshly computed "not busy",
    with final figures. The key holds the project's creation time, so a reused id (SQLite) never reads a
    deleted project's answer."""
    import math
    import time

    from django.core.cache import cache

    key = f"affectloop:live-progress:{project.pk}:{project.created_at.timestamp()}"
    if PROGRESS_CACHE_SECONDS > 0:
        cached = cache.get(key)
        if cached is not None:
            return cached
    started = time.monotonic()
    progress = _compute_live_progress(project)
    if progress["busy"] and PROGRESS_CACHE_SECONDS > 0:
        took = time.monotonic() - started
        cache.set(key, progress, max(PROGRESS_CACHE_SECONDS, math.ceil(2 * took)))
    return progress


def _compute_live_progress(project: Project) -> dict:
    from django.db.models import Exists, OuterRef

    from .models import Prediction
    from .project_config import ConfigError
    from .services import prelabel as prelabel_plan

    counts = clip_status_counts(project)
    prelabel = prelabel_progress(project)
    ready = project.clips.filter(status=Clip.Status.READY)

    # Each clip's latest prediction per backend (GPU run or import). An empty or flagged answer is counted
    # as such, not as pre-labeled; the three counts split the clips that have a fused prediction.
    latest = Prediction.objects.filter(clip__in=ready).exclude(Exists(Prediction.objects.filter(
        clip=OuterRef("clip"), backend=OuterRef("backend"), created_at__gt=OuterRef("created_at"))))
    no_answer = Q(labels=[]) | Q(flags__icontains='"empty"') | Q(flags__icontains='"truncated"')
    fused = latest.filter(backend="fused")
    empty = ready.filter(pk__in=fused.filter(labels=[]).values("clip"))
    flagged = (ready.filter(pk__in=fused.values("clip")).exclude(pk__in=empty.values("pk"))
               .filter(pk__in=latest.exclude(backend="fused").filter(no_answer).values("clip")))
    prelabel.update(
        prelabeled=ready.filter(pk__in=fused.values("clip")).exclude(pk__in=empty.values("pk"))
        .exclude(pk__in=flagged.values("pk")).count(),
        empty=empty.count(), flagged=flagged.count())

    try:
        current = prelabel_plan.plan(project)
    except ConfigError:
        current = None
    needing = prelabel_plan.clips_needing_prelabel(project, current) if current else Clip.objects.none()
    # An enabled backend without a registered model: its clips wait for the registration (a failed one marks
    # them with an error, which ends the wait).
    for_models = needs_humans(ready.filter(prelabel_error="")) if current and current.missing else None
    waiting = (for_models if for_models is not None else needing).filter(prelabel_queued_at__isnull=True).count()
    prelabel["waiting"] = waiting
    busy = bool(counts.get(Clip.Status.PENDING) or counts.get(Clip.Status.PROCESSING) or waiting
                or needing.exists() or (for_models is not None and for_models.exists()))

    return {"counts": counts, "prelabel": prelabel, "busy": busy}


def clip_page(clips: QuerySet[Clip], *, order: str, after: str, size: int) -> dict:
    """One keyset page of clips (no OFFSET, no COUNT), with each clip's indexed labels:
    {"rows": [(clip, [(term, source), ...])], "more": bool, "cursor": str}. `order` is "new" (id DESC) or
    "priority" (priority DESC NULLS LAST, id); the cursor is the last id, or "priority:id" ("none:id" once
    past the scored clips). A malformed cursor is ignored: the first page."""
    from django.db.models import F

    from .models import ClipLabel

    tail = None
    if order == "priority":
        clips = clips.order_by(F("priority").desc(nulls_last=True), "id")
        p, _, last = after.partition(":")
        if last.isdecimal() and len(last) < 19:
            if p == "none":
                clips = clips.filter(priority__isnull=True, pk__gt=int(last))
            else:
                try:
                    value = float(p)
                except ValueError:
                    value = None
                if value is not None:
                    # A range the index starts at, not an OR it must filter from the top of the order (963 ms
                    # half way down 1M clips); the unscored tail by a second query once the scored run out
                    # (LIMIT size + 1 there too: with LIMIT 1 the planner walked the whole tail).
                    tail = clips.filter(priority__isnull=True)
                    clips = clips.filter(priority__lte=value).exclude(priority=value, pk__lte=int(last))
    else:
        clips = clips.order_by("-id")
        if after.isdecimal() and len(after) < 19:
            clips = clips.filter(pk__lt=int(after))
    rows = list(clips[:size + 1])
    if tail is not None and len(rows) <= size:
        rows += list(tail[:size + 1])
    more = len(rows) > size
    rows = rows[:size]
    cursor = ""
    if more and rows:
        last = rows[-1]
        cursor = (f"{'none' if last.priority is None else repr(last.priority)}:{last.pk}" if order == "priority"
                  else str(last.pk))
    labels: dict[int, list] = {}
    for clip_id, term, source in ClipLabel.objects.filter(clip_id__in=[c.pk for c in rows]).values_list(
            "clip_id", "term", "source"):
        labels.setdefault(clip_id, []).append((term, source))
    return {"rows": [(c, labels.get(c.pk, [])) for c in rows], "more": more, "cursor": cursor}
