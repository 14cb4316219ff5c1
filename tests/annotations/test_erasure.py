"""Erasure on request (services.erasure, manage.py erase_clips, the managers' pages): a clip, or every clip
with a metadata value, goes with everything derived from it; the audit log keeps the fact and the sha256 only;
no file of it is left under the media root."""

import io
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from annotations.models import (
    Annotation,
    AnnotationRevision,
    AuditEvent,
    Caption,
    Clip,
    ClipLabel,
    ClipLease,
    ClipSkip,
    DatasetSnapshot,
    Export,
    ModelVersion,
    Prediction,
    Review,
    Role,
    SnapshotItem,
    TrainingRun,
)
from annotations.services import annotating, erasure, queue, reviews, snapshots
from annotations.services.projects import create_project, set_membership
from tests.annotations.training_fixtures import key_in

pytestmark = pytest.mark.django_db

SECRET_TRANSCRIPT = "Zyxwv told me about the accident"
LABELS = ["wistful", "grateful"]


@pytest.fixture
def people(project, django_user_model):
    users = {"alice": project.memberships.get(user__username="alice").user}
    for name, role in (("bob", Role.ANNOTATOR), ("rita", Role.REVIEWER)):
        users[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-12345")
        set_membership(project=project, user=users[name], role=role)
    return users


def media_files(settings) -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(Path(folder, f).relative_to(root)) for folder, _, files in os.walk(root) for f in files}


def make_clip(project, settings, name, *, subject, split="train", transcript=SECRET_TRANSCRIPT) -> Clip:
    """A ready clip stored as ingest stores it: content-addressed media and thumbnail files."""
    sha = key_in(split)
    rel = f"clips/{project.pk}/{sha[:2]}/{sha}.mp4"
    thumb = f"thumbs/{project.pk}/{sha[:2]}/{sha}.jpg"
    for part in (rel, thumb):
        path = Path(settings.MEDIA_ROOT) / part
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes of " + name.encode())
    return Clip.objects.create(project=project, file=rel, thumbnail=thumb, sha256=sha, name=name, size_bytes=9,
                               status=Clip.Status.READY, duration=1.0, transcript=transcript,
                               metadata={"subject": subject, "session": 3})


def verify(clip, people, labels=LABELS):
    queue.claim(people["alice"], clip)
    draft = annotating.start(people["alice"], clip)
    annotation = annotating.submit(draft, labels=labels, base_version=draft.version)
    reviews.review(annotation, reviewer=people["rita"], decision="fix", fixed_labels=labels,
                   reason="Zyxwv reason text")
    return annotation


def attach_everything(clip, people):
    """Prediction, annotation + revision + review, caption, lease, skip (the clip is verified)."""
    verify(clip, people)
    Prediction.objects.create(clip=clip, backend="fused", model_version="fused:t+1",
                              labels=[{"term": "wistful", "score": 0.7, "source": "fused"}], raw_text="raw")
    Caption.objects.create(clip=clip, text="A wistful person", model_version="internvl:t", prompt_version="c1",
                           labels=["wistful"], fused_labels=["wistful"], agreement=1.0, kept=True)
    now = timezone.now()
    ClipLease.objects.create(clip=clip, user=people["bob"], kind="annotate", acquired_at=now,
                             expires_at=now + timedelta(minutes=5))
    ClipSkip.objects.create(clip=clip, user=people["bob"], reason="I know Zyxwv personally")


@pytest.fixture
def world(project, people, settings, tmp_path, manager):
    """Two clips of subject s017 (everything attached), one of s018, frozen in one snapshot with an exported
    file, a model trained on it and another trained on top of that, and a training run's data files."""
    settings.MODEL_DIR = tmp_path / "models"
    erased = [make_clip(project, settings, f"subject-s017-take{i}", subject="s017") for i in (1, 2)]
    kept = make_clip(project, settings, "subject-s018-take1", subject="s018", transcript="other words")
    for clip in erased:
        attach_everything(clip, people)
    verify(kept, people, ["calm"])
    snapshot = snapshots.freeze(project, actor=manager, name="round-1")
    export_file = Path(settings.MEDIA_ROOT) / "exports" / f"{snapshot.pk}" / "merov.zip"
    export_file.parent.mkdir(parents=True)
    export_file.write_bytes(b"name,openset\nsubject-s017-take1,['wistful']\n")
    export = Export.objects.create(snapshot=snapshot, format=Export.Format.MEROV_CSV, options_hash="o1",
                                   status=Export.Status.DONE, file=f"exports/{snapshot.pk}/merov.zip",
                                   checksum="c" * 64, row_count=3)
    run = TrainingRun.objects.create(project=project, snapshot=snapshot, status=TrainingRun.Status.SUCCEEDED,
                                     eval_metrics={"test": {"per_clip": [
                                         {"clip": c.name, "gold": ["wistful"]} for c in (*erased, kept)]}})
    model = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:base+run1",
                                        base_model="tiny", training_run=run,
                                        metrics={"evaluation": {"per_clip": [{"clip": erased[0].name}]}})
    run2 = TrainingRun.objects.create(project=project, base_model=model, status=TrainingRun.Status.SUCCEEDED)
    child = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:base+run2",
                                        base_model="tiny", training_run=run2, parent=model)
    unrelated = ModelVersion.objects.create(project=project, backend="affectgpt", name="affectgpt:x",
                                            base_model="q")
    running = TrainingRun.objects.create(project=project, snapshot=snapshot, status=TrainingRun.Status.RUNNING)
    data = settings.MODEL_DIR / "training" / project.slug / "run-1-abcd"
    data.mkdir(parents=True)
    snapshots.write_jsonl(snapshot, data)
    # The adapter's evaluation answers name each validation clip's video, with its gold labels.
    adapter = settings.MODEL_DIR / "adapters" / project.slug / "run-1-abcd"
    adapter.mkdir(parents=True)
    (adapter / "eval_predictions.jsonl").write_text("".join(
        json.dumps({"video": str(Path(settings.MEDIA_ROOT) / c.file.name), "gold": [c.name]}) + "\n"
        for c in (*erased, kept)))
    return {"erased": erased, "kept": kept, "snapshot": snapshot, "export": export, "model": model,
            "child": child, "unrelated": unrelated, "data": data, "running": running, "adapter": adapter}


def audit_json() -> str:
    return json.dumps(list(AuditEvent.objects.values("action", "object_type", "object_id", "changes")))


def test_erasing_a_subject_removes_every_row_and_file(project, world, settings, manager,
                                                      django_capture_on_commit_callbacks):
    erased, kept = world["erased"], world["kept"]
    ids = [c.pk for c in erased]
    annotations = list(Annotation.objects.filter(clip__in=erased).values_list("pk", flat=True))
    before = media_files(settings)
    theirs = {c.file.name for c in erased} | {c.thumbnail.name for c in erased} | {world["export"].file.name}
    assert theirs <= before

    with django_capture_on_commit_callbacks(execute=True):
        result = erasure.erase(project, {"where": "subject=s017"}, actor=manager)

    assert result.clips == 2 and result.counts["clips"] == 2
    assert result.counts["predictions"] == 2 and result.counts["captions"] == 2 and result.counts["skips"] == 2
    assert not Clip.objects.filter(pk__in=ids).exists()
    for model, lookup in ((Prediction, "clip_id__in"), (Caption, "clip_id__in"), (ClipLease, "clip_id__in"),
                          (ClipSkip, "clip_id__in"), (ClipLabel, "clip_id__in"), (SnapshotItem, "clip_id__in"),
                          (Annotation, "clip_id__in"), (AnnotationRevision, "annotation_id__in"),
                          (Review, "annotation_id__in")):
        values = annotations if lookup == "annotation_id__in" else ids
        assert not model.objects.filter(**{lookup: values}).exists(), model.__name__
    # The other subject's clip keeps everything.
    assert Clip.objects.filter(pk=kept.pk).exists() and kept.annotations.exists()
    assert SnapshotItem.objects.filter(clip=kept).exists()

    snapshot = DatasetSnapshot.objects.get(pk=world["snapshot"].pk)
    assert snapshot.erased_count == 2 and snapshot.items.count() == 1
    assert snapshot.erasures == [{"at": snapshot.erasures[0]["at"], "clips": 2, "event": result.event_id}]
    export = Export.objects.get(pk=world["export"].pk)
    assert export.status == Export.Status.ERASED and not export.file
    model, child, unrelated = (ModelVersion.objects.get(pk=world[k].pk) for k in ("model", "child", "unrelated"))
    assert model.erased_data_at is not None and child.erased_data_at is not None
    assert unrelated.erased_data_at is None
    assert model.metrics["evaluation"]["per_clip"] == []
    # The run training on them right now is asked to stop (its model would carry them, unflagged).
    assert TrainingRun.objects.get(pk=world["running"].pk).cancel_requested and result.runs == [world["running"].pk]
    run = TrainingRun.objects.get(pk=model.training_run_id)
    assert [row["clip"] for row in run.eval_metrics["test"]["per_clip"]] == [kept.name]

    # The audit event: who, how many, the sha256 only; no name, transcript, label or metadata value anywhere.
    event = AuditEvent.objects.get(pk=result.event_id)
    assert (event.action, event.actor_id, event.project_id) == ("clip.erased", manager.pk, project.pk)
    assert event.changes["clips"] == 2 and event.changes["sha256"] == sorted(c.sha256 for c in erased)
    logged = audit_json()
    for secret in (*[c.name for c in erased], "Zyxwv", "s017", *LABELS):
        assert secret not in logged, secret

    # No file of theirs is left under the media root; the rest is untouched; no empty folders of theirs.
    after = media_files(settings)
    assert not (after & theirs) and after == before - theirs
    assert not [folder for folder, dirs, files in os.walk(settings.MEDIA_ROOT) if not dirs and not files]
    # Nor in the training run's data files.
    lines = (world["data"] / "train.jsonl").read_text() + (world["data"] / "val.jsonl").read_text() + (
        world["data"] / "test.jsonl").read_text()
    assert "Zyxwv" not in lines and "other words" in lines
    assert not any(c.sha256 in lines for c in erased)
    answers = (world["adapter"] / "eval_predictions.jsonl").read_text()
    assert kept.name in answers and not any(c.name in answers for c in erased)


def test_erasing_by_name_keeps_the_others_and_refuses_unknown_names(project, world, manager,
                                                                    django_capture_on_commit_callbacks):
    first, second = world["erased"]
    with pytest.raises(erasure.ErasureError, match="no-such-clip"):
        erasure.erase(project, {"names": [first.name, "no-such-clip"]}, actor=manager)
    assert Clip.objects.filter(pk=first.pk).exists()
    plan = erasure.plan(project, names=[first.name, "no-such-clip"])
    assert plan.unknown == ["no-such-clip"] and plan.clip_ids == [first.pk]
    with django_capture_on_commit_callbacks(execute=True):
        erasure.erase(project, {"names": [first.name]}, actor=manager)
    assert not Clip.objects.filter(pk=first.pk).exists()
    assert Clip.objects.filter(pk__in=[second.pk, world["kept"].pk]).count() == 2
    assert DatasetSnapshot.objects.get(pk=world["snapshot"].pk).erased_count == 1


def test_where_matches_numbers_and_text_on_both_databases(project, settings):
    a = make_clip(project, settings, "a", subject="17")
    b = make_clip(project, settings, "b", subject=17)
    make_clip(project, settings, "c", subject="170")
    assert erasure.plan(project, where="subject=17").clip_ids == [a.pk, b.pk]
    assert erasure.plan(project, where=("session", "3")).clip_ids == sorted(Clip.objects.values_list("pk", flat=True))
    for bad in ("subject", "=x", "a__b=1", "subject="):
        with pytest.raises(erasure.ErasureError):
            erasure.plan(project, where=bad)
    with pytest.raises(erasure.ErasureError):
        erasure.plan(project, names=["a"], where="subject=17")


def test_a_plan_is_a_dry_run(project, world, settings):
    before_files, before_events = media_files(settings), AuditEvent.objects.count()
    plan = erasure.plan(project, where="subject=s017")
    assert plan.counts["clips"] == 2 and plan.counts["snapshot_items"] == 2
    assert plan.counts["files"] == 5  # 2 media + 2 thumbnails + 1 export
    assert plan.snapshots == [world["snapshot"].pk] and plan.exports == [world["export"].pk]
    assert plan.models == sorted([world["model"].pk, world["child"].pk]) and plan.runs == [world["running"].pk]
    assert Clip.objects.count() == 3 and media_files(settings) == before_files
    assert AuditEvent.objects.count() == before_events


def test_a_failure_inside_the_transaction_leaves_rows_and_files(project, world, settings, manager, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    before_files, before_events = media_files(settings), AuditEvent.objects.count()

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(erasure, "_scrub_evaluations", boom)  # after every delete and update
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        erasure.erase(project, {"where": "subject=s017"}, actor=manager)
    assert callbacks == []
    assert Clip.objects.count() == 3 and SnapshotItem.objects.count() == 3
    assert Prediction.objects.count() == 2 and Annotation.objects.count() == 3
    assert DatasetSnapshot.objects.get(pk=world["snapshot"].pk).erased_count == 0
    assert Export.objects.get(pk=world["export"].pk).status == Export.Status.DONE
    assert ModelVersion.objects.get(pk=world["model"].pk).erased_data_at is None
    assert not TrainingRun.objects.get(pk=world["running"].pk).cancel_requested
    assert media_files(settings) == before_files and AuditEvent.objects.count() == before_events


def test_erasing_twice_finds_nothing(project, world, manager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        erasure.erase(project, {"where": "subject=s017"}, actor=manager)
    with pytest.raises(erasure.ErasureError, match="nothing to erase"):
        erasure.erase(project, {"where": "subject=s017"}, actor=manager)


# --- the command ----------------------------------------------------------------------------------------------
def test_command_dry_run_changes_nothing_then_erases(project, world, settings, django_capture_on_commit_callbacks):
    before = media_files(settings)
    out = io.StringIO()
    call_command("erase_clips", "--project", project.slug, "--where", "subject=s017", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "Dry run" in text and "clips: 2" in text and "files: 5" in text
    assert Clip.objects.count() == 3 and media_files(settings) == before
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("erase_clips", "--project", project.name, "--clip", world["kept"].name, stdout=out)
    assert "Erased 1 clip" in out.getvalue()
    assert not Clip.objects.filter(pk=world["kept"].pk).exists()
    assert AuditEvent.objects.get(action="clip.erased").actor_id is None


def test_command_refuses_bad_input(project, world):
    with pytest.raises(CommandError, match="no-such"):
        call_command("erase_clips", "--project", project.slug, "--clip", "no-such", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no project"):
        call_command("erase_clips", "--project", "nope", "--clip", "x", stdout=io.StringIO())
    with pytest.raises(CommandError, match="nothing to erase"):
        call_command("erase_clips", "--project", project.slug, "--where", "subject=nobody", stdout=io.StringIO())
    assert Clip.objects.count() == 3


# --- the web --------------------------------------------------------------------------------------------------
def test_manager_erases_one_clip_from_its_history_page(client, project, world, manager,
                                                       django_capture_on_commit_callbacks):
    clip = world["erased"][0]
    client.force_login(manager)
    page = client.get(reverse("annotations:clip-history", args=[clip.pk]))
    assert b"Erase this clip" in page.content
    url = reverse("annotations:clip-erase", args=[clip.pk])
    response = client.post(url, {"confirm": "wrong name"})
    assert response.status_code == 302 and Clip.objects.filter(pk=clip.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"confirm": clip.name})
    assert response.status_code == 302 and response["Location"] == reverse("annotations:project-detail",
                                                                           args=[project.slug])
    assert not Clip.objects.filter(pk=clip.pk).exists()


def test_manager_erases_by_metadata_after_a_preview(client, project, world, manager, settings,
                                                    django_capture_on_commit_callbacks):
    client.force_login(manager)
    url = reverse("annotations:erase", args=[project.slug])
    assert client.get(url).status_code == 200
    before = media_files(settings)
    preview = client.post(url, {"key": "subject", "value": "s017", "action": "preview"})
    assert preview.status_code == 200 and b"2 clips" in preview.content
    assert media_files(settings) == before and Clip.objects.count() == 3
    wrong = client.post(url, {"key": "subject", "value": "s017", "action": "erase", "confirm": "ERASE 3"})
    assert wrong.status_code == 200 and Clip.objects.count() == 3
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"key": "subject", "value": "s017", "action": "erase", "confirm": "ERASE 2"})
    assert done.status_code == 302 and Clip.objects.count() == 1


def test_a_large_erasure_runs_on_a_media_worker(client, project, world, manager, settings, monkeypatch,
                                                django_capture_on_commit_callbacks):
    from annotations import tasks

    monkeypatch.setattr(erasure, "WEB_SYNC_LIMIT", 1)
    client.force_login(manager)
    url = reverse("annotations:erase", args=[project.slug])
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = client.post(url, {"key": "subject", "value": "s017", "action": "erase", "confirm": "ERASE 2"})
    assert response.status_code == 302 and len(sent) == 1 and Clip.objects.count() == 3
    with django_capture_on_commit_callbacks(execute=True):
        sent[0]()  # the broker delivers: the task runs (eagerly here)
    assert Clip.objects.count() == 1 and AuditEvent.objects.get(action="clip.erased").actor_id == manager.pk
    assert not ({c.file.name for c in world["erased"]} & media_files(settings))
    assert tasks.erase_clips(project.pk, ["subject", "s017"], manager.pk) == 0  # a redelivery: nothing left


def test_erasure_pages_are_for_this_projects_managers_only(client, project, world, people, manager,
                                                           django_user_model):
    clip = world["erased"][0]
    other = create_project(name="Elsewhere", creator=django_user_model.objects.create_user("olga", password="x"))
    stranger = other.memberships.get().user
    for user in (people["alice"], people["rita"], stranger):
        client.force_login(user)
        assert client.get(reverse("annotations:erase", args=[project.slug])).status_code == 404
        assert client.post(reverse("annotations:erase", args=[project.slug]),
                           {"key": "subject", "value": "s017", "action": "erase", "confirm": "ERASE 2"}
                           ).status_code == 404
        assert client.post(reverse("annotations:clip-erase", args=[clip.pk]),
                           {"confirm": clip.name}).status_code == 404
    assert Clip.objects.count() == 3
    client.force_login(people["rita"])  # a reviewer sees the history, not the danger zone
    history = client.get(reverse("annotations:clip-history", args=[clip.pk]))
    assert history.status_code == 200 and b"Erase this clip" not in history.content
    client.force_login(stranger)
    assert client.get(reverse("annotations:erase", args=[other.slug])).status_code == 200


def test_erasure_forms_need_csrf(project, world, manager):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(manager)
    clip = world["erased"][0]
    assert client.post(reverse("annotations:clip-erase", args=[clip.pk]), {"confirm": clip.name}).status_code == 403
    assert Clip.objects.filter(pk=clip.pk).exists()


# --- end to end: clips imported from a manifest, with real media and thumbnails -------------------------------
@pytest.mark.django_db(transaction=True)
def test_imported_subject_is_erased_without_a_file_or_a_word_left(project, manager, clip_folder, settings):
    import csv

    manifest = clip_folder / "manifest.csv"
    rows = list(csv.DictReader(manifest.open(encoding="utf-8")))
    for i, row in enumerate(rows):
        row["subject"] = "s1" if i < 2 else "s2"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0].keys()])
        writer.writeheader()
        writer.writerows(rows)
    call_command("import_clips", str(manifest), "--project", project.name, "--labels-verified",
                 stdout=io.StringIO(), stderr=io.StringIO())
    clips = list(Clip.objects.order_by("pk"))
    assert len(clips) == 4 and all(c.status == Clip.Status.READY and c.thumbnail for c in clips)
    snapshot = snapshots.freeze(project, actor=manager)
    gone = [c for c in clips if c.metadata.get("subject") == "s1"]
    theirs = {c.file.name for c in gone} | {c.thumbnail.name for c in gone}
    before = media_files(settings)
    assert len(gone) == 2 and theirs <= before

    call_command("erase_clips", "--project", project.slug, "--where", "subject=s1", stdout=io.StringIO())

    after = media_files(settings)
    assert after == before - theirs and len(after) == 4  # the other subject's two clips and thumbnails
    assert Clip.objects.count() == 2 and DatasetSnapshot.objects.get(pk=snapshot.pk).erased_count == 2
    logged = audit_json()
    for clip in gone:
        for secret in (clip.name, clip.transcript, clip.original_name, clip.metadata["import_path"]):
            assert secret not in logged, secret
    assert '"labels": [' not in logged and '"name": "clip_' not in logged
