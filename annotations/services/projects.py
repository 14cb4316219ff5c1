from django.db import transaction
from django.utils.text import slugify

from ..models import Membership, Project, Role
from . import audit


class ProjectError(ValueError):
    pass


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
        audit.record("project.created", project, actor=creator, project=project, changes={"name": name})
    return project


def set_membership(*, project: Project, user, role: str, actor=None, trusted: bool = False) -> Membership:
    if role not in Role.values:
        raise ProjectError(f"unknown role {role!r} (use one of {', '.join(Role.values)})")
    with transaction.atomic():
        membership, created = Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": role, "trusted": trusted})
        audit.record("membership.set", membership, actor=actor, project=project,
                     changes={"user": user.get_username(), "role": role, "trusted": trusted, "created": created})
    return membership
