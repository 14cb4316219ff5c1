"""The rules that must hold even when two workers race: enforced by the database, not by Python."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.utils import timezone

from annotations.models import (
    Annotation, AuditEvent, Clip, ModelVersion, Prediction, Project, Review, TrainingRun,
)
from annotations.services import audit

pytestmark = pytest.mark.django_db


def make_clip(project, sha="a" * 64, **kw):
    kw.setdefault("name", f"clip-{sha[:8]}")
    return Clip.objects.create(project=project, file=f"clips/{sha}.mp4", original_name="x.mp4", sha256=sha,
                               size_bytes=10, **kw)


def test_clip_content_is_unique_per_project_but_not_across_projects(project):
    make_clip(project)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_clip(project)
    other = Project.objects.create(name="Other", slug="other")
    make_clip(other)  # same content in another project is allowed
    assert Clip.objects.filter(sha256="a" * 64).count() == 2


def test_ready_clip_must_have_a_duration(project):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_clip(project, status="ready")


def test_unknown_status_is_refused_by_the_database(project):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_clip(project, status="bogus")


def test_one_prediction_per_clip_and_model_version(project):
    clip = make_clip(project)
    Prediction.objects.create(clip=clip, backend="internvl", model_version="ivl-1b+v1")
    Prediction.objects.create(clip=clip, backend="internvl", model_version="ivl-1b+adapter2+v1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Prediction.objects.create(clip=clip, backend="internvl", model_version="ivl-1b+v1")


def test_one_annotation_per_clip_and_annotator(project, annotator):
    clip = make_clip(project)
    Annotation.objects.create(clip=clip, annotator=annotator)
    with pytest.raises(IntegrityError), transaction.atomic():
        Annotation.objects.create(clip=clip, annotator=annotator)


def test_submitted_annotation_needs_a_time(project, annotator):
    clip = make_clip(project)
    with pytest.raises(IntegrityError), transaction.atomic():
        Annotation.objects.create(clip=clip, annotator=annotator, status="submitted")


def test_reject_needs_a_reason_and_fix_needs_labels(project, annotator, manager):
    clip = make_clip(project)
    ann = Annotation.objects.create(clip=clip, annotator=annotator, status="submitted", submitted_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        Review.objects.create(annotation=ann, reviewer=manager, decision="reject", annotation_version=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Review.objects.create(annotation=ann, reviewer=manager, decision="fix", annotation_version=1)
    Review.objects.create(annotation=ann, reviewer=manager, decision="reject", reason="missed 'relief'",
                          annotation_version=1)


def test_one_active_model_per_project_and_backend(project):
    ModelVersion.objects.create(project=project, backend="internvl", name="a", base_model="b", status="active")
    ModelVersion.objects.create(project=project, backend="affectgpt", name="c", base_model="b", status="active")
    ModelVersion.objects.create(project=project, backend="internvl", name="d", base_model="b", status="candidate")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(project=project, backend="internvl", name="e", base_model="b", status="active")


def test_one_live_training_run_per_project(project):
    TrainingRun.objects.create(project=project, status="running")
    TrainingRun.objects.create(project=project, status="failed")
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(project=project, status="queued")
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(project=project, status="succeeded", progress=1.5)


def test_audit_log_refuses_update_and_delete_in_the_database(project, manager):
    event = audit.record("test.event", project, actor=manager, project=project)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with override_settings(AUDIT_PURGE_ALLOWED=False):
        with pytest.raises(Exception, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:  # raw SQL: the ORM's own guard is not what is tested here
                cursor.execute("DELETE FROM annotations_auditevent WHERE id = %s", [event.pk])
    with pytest.raises(ValueError):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


def test_audit_history_survives_deleting_the_project(project, manager):
    audit.record("test.event", project, actor=manager, project=project)
    pid = project.pk
    project.delete()
    assert AuditEvent.objects.filter(project_id=pid, action="test.event").count() == 1
