"""The Django admin covers every table, and a manager who is not a superuser sees only their projects."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from annotations.models import Clip, Project, Role
from annotations.services.projects import create_project, set_membership

pytestmark = pytest.mark.django_db


def test_every_model_is_in_the_admin():
    models = set(apps.get_app_config("annotations").get_models())
    assert models - set(admin.site._registry) == set()


def make_clip(project, sha):
    return Clip.objects.create(project=project, file=f"clips/{sha}.mp4", original_name=f"{project.slug}.mp4",
                               sha256=sha, size_bytes=10)


def test_manager_sees_only_projects_they_manage(client, django_user_model):
    boss = django_user_model.objects.create_user("boss", password="pw-boss-123")
    superuser = django_user_model.objects.create_superuser("root", password="pw-root-123")
    mine = create_project(name="Mine", creator=superuser)
    theirs = create_project(name="Theirs", creator=superuser)
    set_membership(project=mine, user=boss, role=Role.MANAGER, actor=superuser)
    make_clip(mine, "a" * 64)
    make_clip(theirs, "b" * 64)
    boss.refresh_from_db()
    assert boss.is_staff and not boss.is_superuser

    client.force_login(boss)
    page = client.get(reverse("admin:annotations_clip_changelist")).content.decode()
    assert "mine.mp4" in page and "theirs.mp4" not in page
    assert client.get(reverse("admin:annotations_clip_change", args=[Clip.objects.get(project=theirs).pk])
                      ).status_code == 302  # not found in the scoped queryset → admin redirects away
    projects = client.get(reverse("admin:annotations_project_changelist")).content.decode()
    assert ">Mine<" in projects and ">Theirs<" not in projects
    assert client.get(reverse("admin:annotations_auditevent_changelist")).status_code == 200
    assert client.get(reverse("admin:annotations_auditevent_add")).status_code == 403


def test_annotator_has_no_admin(client, annotator, project):
    client.force_login(annotator)
    response = client.get(reverse("admin:annotations_clip_changelist"))
    assert response.status_code == 302 and "login" in response["Location"]


def test_superuser_sees_everything(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("root", password="pw-root-123")
    for name in ("One", "Two"):
        make_clip(create_project(name=name, creator=superuser), name[0].lower() * 64)
    client.force_login(superuser)
    page = client.get(reverse("admin:annotations_clip_changelist")).content.decode()
    assert "one.mp4" in page and "two.mp4" in page
    assert Project.objects.count() == 2
