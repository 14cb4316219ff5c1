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
                               name=project.slug, sha256=sha, size_bytes=10)


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
    assert ">mine<" in page and ">theirs<" not in page
    assert client.get(reverse("admin:annotations_clip_change", args=[Clip.objects.get(project=theirs).pk])
                      ).status_code == 302  # not found in the scoped queryset → admin redirects away
    projects = client.get(reverse("admin:annotations_project_changelist")).content.decode()
    assert ">Mine<" in projects and ">Theirs<" not in projects
    assert client.get(reverse("admin:annotations_auditevent_changelist")).status_code == 200
    assert client.get(reverse("admin:annotations_auditevent_add")).status_code == 403


@pytest.mark.usefixtures("project")  # the annotator is a member of a project, and still has no admin
def test_annotator_has_no_admin(client, annotator):
    client.force_login(annotator)
    response = client.get(reverse("admin:annotations_clip_changelist"))
    assert response.status_code == 302 and "login" in response["Location"]


def test_superuser_sees_everything(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("root", password="pw-root-123")
    for name in ("One", "Two"):
        make_clip(create_project(name=name, creator=superuser), name[0].lower() * 64)
    client.force_login(superuser)
    page = client.get(reverse("admin:annotations_clip_changelist")).content.decode()
    assert ">one<" in page and ">two<" in page
    assert Project.objects.count() == 2


def test_manager_cannot_point_their_objects_at_another_project(client, django_user_model):
    from annotations.models import DatasetSnapshot, TrainingRun

    boss = django_user_model.objects.create_user("boss", password="pw-boss-123")
    superuser = django_user_model.objects.create_superuser("root", password="pw-root-123")
    mine, theirs = (create_project(name=n, creator=superuser) for n in ("Mine", "Theirs"))
    set_membership(project=mine, user=boss, role=Role.MANAGER, actor=superuser)
    foreign = DatasetSnapshot.objects.create(project=theirs, name="v1", content_hash="f" * 64)
    run = TrainingRun.objects.create(project=mine, status="failed")
    client.force_login(boss)
    url = reverse("admin:annotations_trainingrun_change", args=[run.pk])
    response = client.post(url, {"project": mine.pk, "snapshot": foreign.pk, "status": "failed", "progress": 0,
                                 "config": "{}", "metrics": "[]", "eval_metrics": "{}"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    run.refresh_from_db()
    assert run.snapshot_id is None
    page = client.get(reverse("admin:annotations_clip_changelist")).content.decode()
    assert "Theirs" not in page  # the project filter lists only related projects


def test_clip_files_and_model_paths_are_read_only_for_managers(client, django_user_model):
    from annotations.models import ModelVersion

    boss = django_user_model.objects.create_user("boss", password="pw-boss-123")
    project = create_project(name="Mine", creator=boss)
    clip = make_clip(project, "c" * 64)
    version = ModelVersion.objects.create(project=project, backend="internvl", name="v", base_model="/models/ivl")
    client.force_login(boss)
    form = client.get(reverse("admin:annotations_clip_change", args=[clip.pk])).content.decode()
    assert 'name="file"' not in form and 'name="thumbnail"' not in form
    form = client.get(reverse("admin:annotations_modelversion_change", args=[version.pk])).content.decode()
    assert 'name="base_model"' not in form and 'name="adapter_path"' not in form


def test_admin_membership_changes_go_through_the_service(client, project, manager, outsider):
    """Adding a manager in the admin gives staff status and the managers group, and is audited."""
    from annotations.models import AuditEvent, Membership

    superuser = django_superuser = type(manager).objects.create_superuser("root2", password="pw-root-123")
    client.force_login(django_superuser)
    response = client.post(reverse("admin:annotations_membership_add"),
                           {"project": project.pk, "user": outsider.pk, "role": "manager"})
    assert response.status_code == 302
    outsider.refresh_from_db()
    assert outsider.is_staff and outsider.groups.filter(name="Project managers").exists()
    assert Membership.objects.get(project=project, user=outsider).role == "manager"
    event = AuditEvent.objects.filter(action="membership.set").order_by("-id").first()
    assert event.actor == superuser and event.changes["user"] == "oscar"


def test_clips_are_not_added_and_states_are_read_only_in_the_admin(client, project, manager):
    client.force_login(manager)
    assert client.get(reverse("admin:annotations_clip_add")).status_code == 403
    assert client.get(reverse("admin:annotations_modelversion_add")).status_code == 403
    assert client.get(reverse("admin:annotations_prediction_add")).status_code == 403
    from annotations.admin import ClipAdmin, ModelVersionAdmin

    assert {"label_state", "verified_at", "status"} <= set(ClipAdmin.readonly_fields)
    assert "status" in ModelVersionAdmin.readonly_fields


def test_promote_roll_back_and_retire_are_audited_admin_actions(client, project, manager):
    from django.utils import timezone

    from annotations.models import AuditEvent, ModelVersion

    base = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:ivl+base",
                                       base_model="ivl", status="active", promoted_at=timezone.now())
    tuned = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:ivl+a@1",
                                        base_model="ivl", adapter_path="runs/1")
    client.force_login(manager)
    url = reverse("admin:annotations_modelversion_changelist")
    page = client.post(url, {"action": "promote", "_selected_action": [tuned.pk]}, follow=True).content.decode()
    assert "Promoted internvl:ivl+a@1." in page
    base.refresh_from_db(), tuned.refresh_from_db()
    assert (base.status, tuned.status) == ("retired", "active")
    client.post(url, {"action": "roll_back", "_selected_action": [tuned.pk]})
    base.refresh_from_db(), tuned.refresh_from_db()
    assert (base.status, tuned.status) == ("active", "retired")
    page = client.post(url, {"action": "promote", "_selected_action": [base.pk]}, follow=True).content.decode()
    assert "is already active" in page  # refused with the registry's message, nothing changed
    client.post(url, {"action": "retire", "_selected_action": [base.pk]})
    base.refresh_from_db()
    assert base.status == "retired" and not ModelVersion.objects.filter(status="active").exists()
    assert list(AuditEvent.objects.filter(action__startswith="model.").values_list("action", "actor")
                .order_by("id")) == [("model.promoted", manager.pk), ("model.rolled_back", manager.pk),
                                     ("model.retired", manager.pk)]


def test_a_project_added_in_the_admin_gets_its_vocabulary(client, django_user_model):
    from annotations.models import AuditEvent, EmotionTerm
    from annotations.services.vocabulary import project_vocabulary

    root = django_user_model.objects.create_superuser("root3", password="pw-root-123")
    client.force_login(root)
    response = client.post(reverse("admin:annotations_project_add"),
                           {"name": "From admin", "slug": "from-admin", "description": "", "config": "{}",
                            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"})
    assert response.status_code == 302
    project = Project.objects.get(slug="from-admin")
    assert EmotionTerm.objects.filter(project=project, kind="term").count() == len(project_vocabulary(project))
    assert EmotionTerm.objects.filter(project=project).count() > 328
    assert AuditEvent.objects.get(action="project.created", project=project).actor == root


def test_releasing_a_lease_frees_only_that_lease_not_the_others_on_its_clip(client, project, manager,
                                                                            annotator, django_user_model):
    from datetime import timedelta

    from django.utils import timezone

    from annotations.models import AuditEvent, ClipLease

    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    set_membership(project=project, user=bob, role=Role.ANNOTATOR, actor=manager)
    clip = make_clip(project, "d" * 64)
    now = timezone.now()
    alices, bobs = (ClipLease.objects.create(clip=clip, user=user, kind="annotate", acquired_at=now,
                                             expires_at=now + timedelta(minutes=30))
                    for user in (annotator, bob))
    client.force_login(manager)
    page = client.post(reverse("admin:annotations_cliplease_changelist"),
                       {"action": "release", "_selected_action": [alices.pk]}, follow=True).content.decode()
    assert "Released 1 lease." in page
    assert list(ClipLease.objects.values_list("pk", flat=True)) == [bobs.pk]  # Bob still holds his place
    event = AuditEvent.objects.get(action="lease.released")
    assert (event.actor, event.project, event.object_type, event.object_id) == (manager, project, "clip",
                                                                                str(clip.pk))
    assert event.changes == {"user": "alice", "kind": "annotate"}
