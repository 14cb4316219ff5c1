"""Reads, with the membership rule in one place: every object a user sees goes through here."""

from django.db.models import Count, Q, QuerySet
from django.http import Http404

from .models import ROLE_RANK, Clip, Membership, Project, Role


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
    """Pre-labeling state of the project's ready clips, machine throughput, and the latest errors."""
    from datetime import timedelta

    from django.utils import timezone

    from .models import Prediction

    ready = project.clips.filter(status=Clip.Status.READY)
    fused = Prediction.objects.filter(clip__project=project, backend="fused")
    since = timezone.now() - timedelta(minutes=10)
    recent = fused.filter(created_at__gte=since).count()
    labelled = ready.filter(predictions__backend="fused").distinct()
    return {
        "configured": bool(((project.config or {}).get("prelabel") or {}).get("backends")),
        "prelabeled": labelled.count(),
        "queued": ready.filter(prelabel_queued_at__isnull=False, prelabel_error="",
                               label_state__in=["unlabeled", "prelabeled", "in_progress"]).exclude(
            pk__in=labelled.values("pk")).count(),
        "failed": ready.exclude(prelabel_error="").count(),
        "ready": ready.count(),
        "per_minute_10min": round(recent / 10.0, 2),
        "errors": list(ready.exclude(prelabel_error="").order_by("-updated_at")
                       .values("id", "original_name", "prelabel_error")[:5]),
    }
