from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.utils.text import slugify

from .. import dispatch
from ..models import ROLE_RANK, ClipLease, Membership, Project, Role
from ..project_config import ConfigError, diff, parse, section_changed
from . import audit, vocabulary


class ProjectError(ValueError):
    pass


MANAGERS_GROUP = "Project managers"
# What a project manager may do in the Django admin; the admin itself limits rows to their projects.
_MANAGER_PERMS = {
    "view": ["project", "membership", "clip", "prediction", "annotation", "review", "cliplease", "emotionterm",
             "modelversion", "trainingrun", "datasetsnapshot", "snapshotitem", "export", "auditevent", "clipskip",
             "annotationrevision", "cliplabel"],
    "change": ["project", "membership", "clip", "emotionterm", "modelversion", "trainingrun", "datasetsnapshot"],
    "add": ["membership", "emotionterm"],
    "delete": ["membership", "emotionterm", "cliplease"],
}


def managers_group() -> Group:
    group, _ = Group.objects.get_or_create(name=MANAGERS_GROUP)
    codenames = [f"{action}_{model}" for action, models in _MANAGER_PERMS.items() for model in models]
    perms = list(Permission.objects.filter(content_type__app_label="annotations", codename__in=codenames))
    perms += list(Permission.objects.filter(content_type__app_label="auth", codename="view_user"))
    group.permissions.set(perms)
    return group


def _grant_admin(user) -> None:
    """Managers use the Django admin for their projects: staff status plus the managers group."""
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(managers_group())


def revoke_admin_if_unused(user, *, actor=None) -> bool:
    """Take back the managers group, and staff status where nothing else grants it, from a user who no longer
    manages any project. Superusers keep theirs. Returns whether anything was revoked."""
    if Membership.objects.filter(user=user, role=Role.MANAGER).exists():
        return False
    group = Group.objects.filter(name=MANAGERS_GROUP).first()
    had_group = group is not None and user.groups.filter(pk=group.pk).exists()
    if had_group:
        user.groups.remove(group)
    drop_staff = (user.is_staff and not user.is_superuser and had_group and not user.groups.exists()
                  and not user.user_permissions.exists())
    if drop_staff:
        user.is_staff = False
        user.save(update_fields=["is_staff"])
    if had_group or drop_staff:
        audit.record("account.admin_revoked", user, actor=actor,
                     changes={"user": user.get_username(), "staff_revoked": drop_staff})
    return had_group or drop_staff


def create_project(*, name: str, creator, description: str = "") -> Project:
    """Create a project; its creator becomes its first manager."""
    name = name.strip()
    if not name:
        raise ProjectError("a project needs a name")
    slug = slugify(name)[:120]
    if not slug:
        raise ProjectError("the name must contain letters or digits")
    if Project.objects.filter(name__iexact=name).exists() or Project.objects.filter(slug=slug).exists():
        raise ProjectError(f"a project named {name!r} already exists")
    with transaction.atomic():
        project = Project.objects.create(name=name, slug=slug, description=description,
                                         created_by=creator if getattr(creator, "pk", None) else None)
        if getattr(creator, "pk", None):
            Membership.objects.create(project=project, user=creator, role=Role.MANAGER)
            _grant_admin(creator)
        project_created(project, actor=creator)
    return project


def project_created(project: Project, *, actor=None) -> None:
    """What every new project gets, however it was made (the form, import_clips, the admin): its vocabulary,
    filled from the default, and the audit record."""
    with transaction.atomic():
        vocabulary.fill_default(project.pk)
        audit.record("project.created", project, actor=actor, project=project, changes={"name": project.name})


def set_membership(*, project: Project, user, role: str, actor=None, trusted: bool = False) -> Membership:
    if role not in Role.values:
        raise ProjectError(f"unknown role {role!r} (use one of {', '.join(Role.values)})")
    with transaction.atomic():
        membership, created = Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": role, "trusted": trusted})
        if role == Role.MANAGER:
            _grant_admin(user)
        else:
            revoke_admin_if_unused(user, actor=actor)
        audit.record("membership.set", membership, actor=actor, project=project,
                     changes={"user": user.get_username(), "role": role, "trusted": trusted, "created": created})
        if ROLE_RANK[role] < ROLE_RANK[Role.REVIEWER] and not user.is_superuser:
            # No longer a reviewer: their review claims would hold clips other reviewers wait for.
            _release_leases(project, user, actor=actor, kind=ClipLease.Kind.REVIEW, reason="membership.set")
    return membership


def remove_membership(*, project: Project, user, actor=None) -> None:
    """Take a user off a project. Their leases go too (each audited), so their clips return to the queue;
    their drafts stay."""
    with transaction.atomic():
        deleted, _ = Membership.objects.filter(project=project, user=user).delete()
        if deleted:
            audit.record("membership.removed", project, actor=actor, project=project,
                         changes={"user": user.get_username()})
            _release_leases(project, user, actor=actor, reason="membership.removed")
            revoke_admin_if_unused(user, actor=actor)


def _release_leases(project: Project, user, *, actor, reason: str, kind: str | None = None) -> int:
    """Delete the user's leases in the project (of one kind, or all), audited as services.queue does."""
    leases = ClipLease.objects.filter(user=user, clip__project=project)
    if kind is not None:
        leases = leases.filter(kind=kind)
    leases = list(leases.select_related("clip"))
    for lease in leases:
        audit.record("lease.released", lease.clip, actor=actor, project=project,
                     changes={"user": user.get_username(), "kind": lease.kind, "reason": reason})
    ClipLease.objects.filter(pk__in=[lease.pk for lease in leases]).delete()
    return len(leases)


def check_config_change(project: Project, raw) -> tuple[object, dict]:
    """Parse `raw` and refuse changes to frozen keys; returns (parsed config, diff from the saved one)."""
    new = parse(raw)  # ConfigError names every wrong key
    changes = diff(project.config or {}, raw)
    if changes and project.snapshots.exists():
        frozen = [path for path in changes
                  if path.startswith(("config.training.split", "config.training.group_key"))]
        if frozen:
            raise ConfigError([f"{path} is frozen: the project already has dataset snapshots" for path in frozen])
    return new, changes


def update_config(project: Project, raw, *, actor=None) -> Project:
    """Validate and save a project's configuration, audited with its diff. Split ratios and the group key
    are frozen once a snapshot exists (they decide which clips were held out); a change to them queues the
    stored splits' recomputation (a task: a million clips are no work for a request). A change to
    pre-labeling clears the errors it may have caused and queues the clips again."""
    old_raw = project.config or {}
    new, changes = check_config_change(project, raw)
    if not changes:
        return project
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        locked.config = raw
        locked.save(update_fields=["config"])
        audit.record("project.config_changed", locked, actor=actor, project=locked, changes={"diff": changes})
        if any(path.startswith(("config.training.split", "config.training.group_key")) for path in changes):
            dispatch.resplit(locked.pk)
        if section_changed(old_raw, raw, "prelabel") or section_changed(old_raw, raw, "active_learning"):
            from . import prelabel

            prelabel.config_changed(locked, changes)
    project.config = raw
    project._parsed_config = (raw, new)
    return project
