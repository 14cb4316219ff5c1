"""The API's cast: the shared one (maria manages Interviews, alice annotates it, oscar belongs to nothing
there), plus rita (reviewer of Interviews) and a second project, Elsewhere, that oscar manages. Each person
has a knox token and an APIClient that sends it."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from knox.models import AuthToken
from rest_framework.test import APIClient

from annotations.models import Clip, Role
from annotations.services.projects import create_project, set_membership


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the shared cache: each test starts with none."""
    cache.clear()
    yield
    cache.clear()


def token_for(user) -> str:
    return AuthToken.objects.create(user=user)[1]


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def ready_clip(project, n: int, media_root=None, **extra) -> Clip:
    """A ready clip; with media_root, its (fake) video bytes are written where Clip.file points."""
    name = f"clips/{project.slug}-{n}.mp4"
    if media_root is not None:
        path = media_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(range(256)) * 8)
    fields = {"file": name, "sha256": f"{project.pk:08x}{n:056x}", "name": f"clip-{n}",
              "original_name": f"clip-{n}.mp4", "size_bytes": 2048, "status": Clip.Status.READY, "duration": 2.0}
    return Clip.objects.create(project=project, **{**fields, **extra})


@pytest.fixture
def reviewer(project, django_user_model):
    user = django_user_model.objects.create_user("rita", password="pw-rita-123456")
    set_membership(project=project, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def other_project(outsider):
    return create_project(name="Elsewhere", creator=outsider)


@pytest.fixture
def api(manager, annotator, reviewer, outsider):
    """APIClients with each person's token: api.maria, api.alice, api.rita, api.oscar."""
    from types import SimpleNamespace

    return SimpleNamespace(maria=client_for(manager), alice=client_for(annotator), rita=client_for(reviewer),
                           oscar=client_for(outsider))
