"""Every save, delete, inline save and action in the admin writes an audit event with what changed."""

import pytest
from django.contrib import admin
from django.urls import reverse

from annotations.admin_audit import AuditedAdmin
from annotations.models import AuditEvent, Clip, Membership, Project

pytestmark = pytest.mark.django_db


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_every_registered_admin_is_audited():
    plain = [m._meta.label for m, a in admin.site._registry.items() if not isinstance(a, AuditedAdmin)]
    assert plain == []


def test_the_reviewed_scenario_leaves_a_trail(client, project, manager, annotator):
    """The review: a manager made a membership manager and trusted, tried to mark a clip verified and rewrote
    the project config, and the log had nothing."""
    client.force_login(manager)
    membership = Membership.objects.get(project=project, user=annotator)
    response = client.post(reverse("admin:annotations_membership_change", args=[membership.pk]),
                           {"project": project.pk, "user": "alice", "role": "manager", "trusted": "on"})
    assert response.status_code == 302
    changed = events("admin.changed")[-1]
    assert changed.actor == manager and changed.project == project
    assert changed.changes["fields"]["role"] == ["annotator", "manager"]
    assert changed.changes["fields"]["trusted"] == [False, True]

    clip = Clip.objects.create(project=project, file="clips/x.mp4", sha256="a" * 64, name="x", size_bytes=1)
    client.post(reverse("admin:annotations_clip_change", args=[clip.pk]), {"label_state": "verified"})
    clip.refresh_from_db()
    assert clip.label_state != "verified"  # read-only in the admin: only the review service verifies

    response = client.post(reverse("admin:annotations_project_change", args=[project.pk]), {
        "name": project.name, "slug": project.slug, "description": "rewritten", "config": '{"gold": {"rate": 0.1}}',
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"})
    assert response.status_code == 302, response.content.decode()[:2000]
    changed = events("admin.changed")[-1]
    assert changed.object_type == "project" and changed.changes["fields"]["description"] == ["", "rewritten"]
    assert changed.changes["fields"]["config"][1] == {"gold": {"rate": 0.1}}
    assert events("project.config_changed")  # the service's own event, with the diff, is there too


def test_inline_saves_and_deletions_are_recorded(client, project, manager, outsider):
    client.force_login(manager)
    memberships = list(Membership.objects.filter(project=project).order_by("pk"))
    data = {"name": project.name, "slug": project.slug, "description": "", "config": "{}",
            "memberships-TOTAL_FORMS": str(len(memberships) + 1),
            "memberships-INITIAL_FORMS": str(len(memberships))}
    for i, m in enumerate(memberships):
        data.update({f"memberships-{i}-id": m.pk, f"memberships-{i}-project": project.pk,
                     f"memberships-{i}-user": m.user.username, f"memberships-{i}-role": m.role})
    new = len(memberships)
    data.update({f"memberships-{new}-project": project.pk, f"memberships-{new}-user": "oscar",
                 f"memberships-{new}-role": "reviewer"})
    response = client.post(reverse("admin:annotations_project_change", args=[project.pk]), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    inline = events("admin.changed")[-1].changes["inlines"]
    assert {"model": "annotations.membership", "action": "added"}.items() <= inline[0].items()
    assert inline[0]["fields"]["role"] == [None, "reviewer"]

    oscar = Membership.objects.get(project=project, user=outsider)
    response = client.post(reverse("admin:annotations_membership_delete", args=[oscar.pk]), {"post": "yes"})
    assert response.status_code == 302
    deleted = events("admin.deleted")[-1]
    assert deleted.object_id == str(oscar.pk) and deleted.project == project and deleted.actor == manager


def test_bulk_deletes_and_actions_are_recorded(client, project, manager):
    from annotations.services.vocabulary import propose_term

    client.force_login(manager)
    terms = [propose_term(project, word, actor=manager) for word in ("wistful", "giddy")]
    response = client.post(reverse("admin:annotations_emotionterm_changelist"), {
        "action": "delete_selected", "post": "yes", "_selected_action": [t.pk for t in terms]})
    assert response.status_code == 302
    assert {e.object_id for e in events("admin.deleted")} >= {str(t.pk) for t in terms}

    clip = Clip.objects.create(project=project, file="clips/y.mp4", sha256="b" * 64, name="y", size_bytes=1)
    client.post(reverse("admin:annotations_clip_changelist"), {"action": "rerun_prelabel",
                                                               "_selected_action": [clip.pk]})
    action = events("admin.action")[-1]
    assert action.changes["action"] == "rerun_prelabel" and action.changes["selected"] == [str(clip.pk)]


def test_only_actions_that_ran_are_recorded_and_rows_carry_their_ids(client, project, manager, outsider):
    client.force_login(manager)
    client.post(reverse("admin:annotations_clip_changelist"), {"action": "no_such_action",
                                                               "_selected_action": ["999"]})
    assert events("admin.action") == []
    client.post(reverse("admin:annotations_membership_add"), {"project": project.pk, "user": "oscar",
                                                              "role": "annotator"})
    added = events("admin.added")[-1]
    assert added.object_id == str(Membership.objects.get(project=project, user=outsider).pk)


def test_a_config_change_the_project_refuses_is_a_form_error_not_an_audited_change(client, project, manager):
    from annotations.models import DatasetSnapshot

    DatasetSnapshot.objects.create(project=project, name="v1", content_hash="0" * 64)
    client.force_login(manager)
    response = client.post(reverse("admin:annotations_project_change", args=[project.pk]), {
        "name": project.name, "slug": project.slug, "description": "",
        "config": '{"training": {"split": {"train": 0.5, "val": 0.25, "test": 0.25}}}',
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"})
    assert response.status_code == 200 and "is frozen" in response.content.decode()
    assert events("admin.changed") == [] and events("project.config_changed") == []


def test_user_changes_by_a_superuser_are_recorded_without_secrets(client, manager, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(root)
    response = client.post(reverse("admin:auth_user_password_change", args=[manager.pk]),
                           {"password1": "another long secret", "password2": "another long secret",
                            "usable_password": "true"})
    assert response.status_code == 302, response.content.decode()[:2000]
    event = events("admin.changed")[-1]
    assert event.object_type == "user" and event.object_id == str(manager.pk)
    assert "another long secret" not in str(event.changes)


def test_a_new_project_from_the_admin_is_recorded(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(root)
    response = client.post(reverse("admin:annotations_project_add"), {
        "name": "Pilot", "slug": "pilot", "description": "", "config": "{}",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"})
    assert response.status_code == 302
    added = events("admin.added")[-1]
    assert added.object_id == str(Project.objects.get(slug="pilot").pk) and added.actor == root
