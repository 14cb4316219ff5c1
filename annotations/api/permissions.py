"""The UI's membership rule for the API (annotations.selectors): a user who is not a member of a project gets
404 for it and for everything in it, whatever they ask; a member whose role is too low for an action gets 403.
Every queryset a view returns is built from a project or clip found here, so it is scoped by construction."""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied

from .. import selectors
from ..models import Clip, Project, Role


def _check(user, project: Project, role: str) -> None:
    if not selectors.has_role(user, project, role):
        raise PermissionDenied(f"This needs the {role} role in project {project.slug}.")


def project(request, slug: str, role: str = Role.ANNOTATOR) -> Project:
    """The project if the user is a member (else 404), with at least `role` (else 403)."""
    found = selectors.project_for(request.user, slug)
    _check(request.user, found, role)
    return found


def clip(request, clip_id: int, role: str = Role.ANNOTATOR) -> Clip:
    """The clip if the user is a member of its project (else 404), with at least `role` (else 403)."""
    found = selectors.clip_for(request.user, clip_id)
    _check(request.user, found.project, role)
    return found


def in_project(request, model, pk: int, role: str = Role.ANNOTATOR, *, field: str = "project"):
    """One row of `model` by id, found only inside the user's projects (404 otherwise; 403 for a low role)."""
    row = model.objects.select_related(field).filter(pk=pk, **{f"{field}__in": selectors.projects_for(request.user)}
                                                     ).first()
    if row is None:
        from django.http import Http404

        raise Http404("Not found")
    project_of = row
    for part in field.split("__"):
        project_of = getattr(project_of, part)
    _check(request.user, project_of, role)
    return row
