"""Audit payloads hold ids and hashes, and the one change the database allows to a stored event is redaction
(migration 0018, services.audit.redact): the payload replaced by {"redacted": true}, every other column as it
was. Every other UPDATE, and DELETE, stay refused on both databases."""

import importlib

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings

from annotations.models import AuditEvent
from annotations.services import audit

TABLE = AuditEvent._meta.db_table
BEFORE = ("annotations", "0017_data_out")
AFTER = ("annotations", "0018_audit_redaction")
m0018 = importlib.import_module("migrations.0018_audit_redaction")


def _raw(statement, params=None):
    with connection.cursor() as cursor:  # raw SQL: the ORM's own guard is not what is tested here
        cursor.execute(statement, params)


def _row(pk):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, created_at, actor_id, project_id, action, object_type, object_id FROM {TABLE} "
                       "WHERE id = %s", [pk])
        return cursor.fetchone()


@pytest.fixture
def event(project, manager):
    return audit.record("review.recorded", project, actor=manager, project=project,
                        changes={"reason_sha256": "0" * 64, "decision": "reject"})


@pytest.mark.django_db
def test_redact_replaces_the_payload_and_is_audited(project, manager, event):
    before = _row(event.pk)
    redaction = audit.redact(event, actor=manager, reason="asked by the subject, ticket 42")
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.changes == audit.REDACTED and _row(event.pk) == before
    assert (redaction.action, redaction.object_id, redaction.actor_id, redaction.project_id) == (
        "audit.redacted", str(event.pk), manager.pk, project.pk)
    assert redaction.changes["event"] == event.pk and "ticket 42" not in str(redaction.changes)
    assert len(redaction.changes["reason_sha256"]) == 64
    # Again: nothing more happens.
    assert audit.redact(event, actor=manager, reason="again").pk == redaction.pk
    assert AuditEvent.objects.filter(action="audit.redacted").count() == 1
    with pytest.raises(audit.AuditError):
        audit.redact(redaction, actor=manager, reason=" ")


@pytest.mark.django_db
@pytest.mark.parametrize("marker", ['{"redacted": true}', '{"redacted":true}'])
def test_the_database_allows_the_marker_in_changes(event, marker):
    before = _row(event.pk)
    _raw(f"UPDATE {TABLE} SET changes = %s WHERE id = %s", [marker, event.pk])
    assert AuditEvent.objects.get(pk=event.pk).changes == {"redacted": True} and _row(event.pk) == before


@pytest.mark.django_db
@pytest.mark.parametrize("assignment,params", [
    ("changes = %s", ['{}']),
    ("changes = %s", ['{"redacted": false}']),
    ("changes = %s", ['{"redacted": true, "note": "x"}']),
    ("action = 'tampered'", []),
    ("object_id = '999'", []),
    ("actor_id = NULL", []),
    ("project_id = NULL", []),
    ("created_at = '2000-01-01 00:00:00'", []),
    ("changes = %s, action = 'tampered'", ['{"redacted": true}']),
    ("changes = %s, object_type = 'user'", ['{"redacted": true}']),
    ("changes = %s, id = id + 1000", ['{"redacted": true}']),
])
def test_the_database_refuses_any_other_update(event, assignment, params):
    before = (_row(event.pk), AuditEvent.objects.get(pk=event.pk).changes)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _raw(f"UPDATE {TABLE} SET {assignment} WHERE id = %s", [*params, event.pk])
    assert (_row(event.pk), AuditEvent.objects.get(pk=event.pk).changes) == before


@pytest.mark.django_db
def test_the_database_refuses_delete_even_of_a_redacted_event(event, manager):
    audit.redact(event, actor=manager, reason="subject request")
    # SQLite: the test flush's exception off; PostgreSQL: the purge setting off.
    with (override_settings(AUDIT_PURGE_ALLOWED=False), pytest.raises(DatabaseError, match="append-only"),
          transaction.atomic()):
        if connection.vendor == "postgresql":
            _raw("SET LOCAL affectloop.audit_purge = 'off'")
        _raw(f"DELETE FROM {TABLE} WHERE id = %s", [event.pk])
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    with pytest.raises(ValueError):
        AuditEvent.objects.get(pk=event.pk).delete()


# --- the migration's rewrite ----------------------------------------------------------------------------------
def test_the_rewrite_keeps_ids_and_hashes_only():
    rw = m0018.rewritten
    new = rw("annotation.submitted", "5", {"clip": 3, "version": 2, "labels": ["sad", "tired"]})
    assert new == {"clip": 3, "version": 2, "labels_count": 2, "labels_sha256": audit.digest(["sad", "tired"])}
    # The same hash the service writes now.
    assert audit.labels_summary([{"term": "sad"}, {"term": "tired"}])["labels_sha256"] == new["labels_sha256"]
    new = rw("review.recorded", "1", {"annotation": 4, "decision": "fix", "reason": "Bob's face",
                                      "fixed_labels": [{"term": "calm", "source": "human"}]})
    assert new["fixed_labels_count"] == 1 and "reason" not in new and "fixed_labels" not in new
    assert new["reason_sha256"] == audit.text_summary("Bob's face", "reason")["reason_sha256"]
    assert "reason_sha256" not in rw("review.recorded", "1", {"decision": "accept", "reason": ""})
    new = rw("clip.imported", "7", {"source": "upload", "name": "subject-9/take1.mp4", "sha256": "a" * 64,
                                    "labels": ["joy"], "labels_verified": True})
    assert new == {"source": "upload", "sha256": "a" * 64, "labels_count": 1,
                   "labels_sha256": audit.digest(["joy"]), "labels_verified": True}
    assert rw("clip.skipped", "7", {"reason": "I know her"}) == audit.text_summary("I know her", "reason")
    assert "file" not in rw("predictions.imported", "2", {"file": "subject-9.csv", "imported": 1})
    assert rw("snapshot.frozen", "2", {"name": "r1", "filters": {"name": "subject-9"}})["filter_keys"] == ["name"]
    admin = rw("admin.changed", "7", {"model": "annotations.clip", "object": "subject-9 (Interviews)",
                                      "fields": {"transcript": ["old words", "new words"]}, "message": "[]"})
    assert admin["object"] == "annotations.clip:7"
    assert admin["fields"]["transcript"] == {"sha256": [audit.digest("old words"), audit.digest("new words")]}
    assert rw("admin.changed", "1", {"model": "annotations.project", "object": "Interviews"}) is None
    assert rw("membership.set", "1", {"user": "alice"}) is None
    assert rw("annotation.submitted", "1", {"redacted": True}) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_migration_rewrites_stored_events_and_installs_the_rule():
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE])
        apps = executor.loader.project_state([BEFORE]).apps
        Old = apps.get_model("annotations", "AuditEvent")
        submitted = Old.objects.create(action="annotation.submitted", object_type="annotation", object_id="1",
                                       changes={"clip": 1, "version": 2, "labels": ["wistful"]})
        other = Old.objects.create(action="membership.set", object_type="membership", object_id="1",
                                   changes={"user": "alice", "role": "manager"})
        # Before 0018 no update at all is allowed, not even the marker.
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            _raw(f"UPDATE {TABLE} SET changes = %s WHERE id = %s", ['{"redacted": true}', other.pk])
        executor = MigrationExecutor(connection)
        executor.migrate([AFTER])
        stored = dict(AuditEvent.objects.values_list("pk", "changes"))
        assert stored[submitted.pk] == {"clip": 1, "version": 2, "labels_count": 1,
                                        "labels_sha256": audit.digest(["wistful"])}
        assert stored[other.pk] == {"user": "alice", "role": "manager"}
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            _raw(f"UPDATE {TABLE} SET changes = %s WHERE id = %s", ['{}', other.pk])
        _raw(f"UPDATE {TABLE} SET changes = %s WHERE id = %s", ['{"redacted": true}', other.pk])
        # Back to 0017: the old rule again (no update at all).
        executor = MigrationExecutor(connection)
        executor.migrate([BEFORE])
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            _raw(f"UPDATE {TABLE} SET changes = %s WHERE id = %s", ['{"redacted": true}', submitted.pk])
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


# --- the admin's events about a subject's rows ----------------------------------------------------------------
@pytest.mark.django_db
def test_admin_events_about_a_clip_name_it_by_id_and_hash_its_values(project, manager, rf):
    from django import forms
    from django.contrib import admin

    from annotations.admin_audit import form_changes
    from annotations.models import Clip

    clip = Clip.objects.create(project=project, file="clips/x.mp4", sha256="b" * 64, name="subject-s9-take1",
                               size_bytes=1, transcript="old private words")

    class ClipForm(forms.ModelForm):
        class Meta:
            model = Clip
            fields = ["transcript", "language"]

    form = ClipForm({"transcript": "new private words", "language": "en"}, instance=clip)
    assert form.is_valid()
    changes = form_changes(form)
    assert changes["transcript"] == {"sha256": [audit.digest("old private words"), audit.digest("new private words")]}
    request = rf.post("/admin/")
    request.user = manager
    admin.site._registry[Clip]._audit(request, "admin.changed", clip, {"fields": changes})
    event = AuditEvent.objects.get(action="admin.changed")
    assert event.changes["object"] == f"annotations.clip:{clip.pk}"
    assert "subject-s9" not in str(event.changes) and "private" not in str(event.changes)
