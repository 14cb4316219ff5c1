"""What several management commands parse the same way: a project given by name or slug, and clip-list
filters given as repeated KEY=VALUE options."""

from django.core.management.base import CommandError

from .. import selectors
from ..models import Project


def project(ref: str) -> Project:
    """The project named or slugged `ref`; a CommandError naming it otherwise."""
    found = selectors.project_by_ref(ref)
    if found is None:
        raise CommandError(f"no project named {ref!r}")
    return found


def filters(pairs: list[str], option: str = "--filter") -> dict[str, str]:
    """{"split": "train", ...} from ["split=train", ...]; the values are checked by filters.ClipFilter later."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"{option} takes KEY=VALUE, not {pair!r}")
        parsed[key.strip()] = value
    return parsed


def user(username: str | None):
    """The user named by an optional --user (recorded in the audit log), or None; a CommandError when no
    such user exists."""
    if not username:
        return None
    from django.contrib.auth import get_user_model

    found = get_user_model().objects.filter(username=username).first()
    if found is None:
        raise CommandError(f"no user named {username!r}")
    return found
