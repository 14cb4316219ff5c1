"""Frozen snapshots (services.snapshots): what a training run is made of, fixed and named by its content."""

import io
from datetime import timedelta
from itertools import count

import pytest
from django.core.management import call_command
from django.db.models import RestrictedError
from django.utils import timezone

from annotations import selectors
from annotations.models import AuditEvent, Clip, DatasetSnapshot, Prediction, Role, SnapshotItem
from annotations.services import annotating, queue, reviews, snapshots, vocabulary
from annotations.services.projects import set_membership, update_config
from ml.splits import split_of
from ml.training.data import read_samples

pytestmark = pytest.mark.django_db

_keys = count(1)


def clip_in(project, split, *, transcript="", name=None, **extra):
    """A ready clip whose sha256 the default 0.8/0.1/0.1 ratios put in `split`, with a file in storage."""
    from django.conf import settings

    while True:
        n = next(_keys)
        if split_of(f"{n:064x}", 0.8, 0.1, 0.1) == split:
            break
    path = settings.MEDIA_ROOT / "clips" / f"{n}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really a video")  # ml.training.data.read_samples checks the file exists
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}",
                               name=name or f"clip-{n:03d}", size_bytes=1, status=Clip.Status.READY,
                               duration=2.0, transcript=transcript, **extra)


@pytest.fixture
def people(project, django_user_model):
    users = {"alice": project.memberships.get(user__username="alice").user}
    for name, role in (("bob", Role.ANNOTATOR), ("rita", Role.REVIEWER), ("rex", Role.REVIEWER)):
        users[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-12345")
        set_membership(project=project, user=users[name], role=role)
    return users


def submitted(clip, user, labels):
    queue.claim(user, clip)
    draft = annotating.start(user, clip)
    return annotating.submit(draft, labels=labels, base_version=draft.version)


def verified(clip, people, labels, *, by="alice", decision="accept", fixed=None):
    annotation = submitted(clip, people[by], labels)
    reviews.review(annotation, reviewer=people["rita"], decision=decision, fixed_labels=fixed)
    return annotation


def predict(clip, backend, version, terms, *, at=None):
    row = Prediction.objects.create(clip=clip, backend=backend, model_version=version,
                                    labels=[{"term": t, "score": 0.5, "source": backend} for t in terms])
    if at is not None:
        Prediction.objects.filter(pk=row.pk).update(created_at=at)
    return row


def items(snapshot):
    return {item.clip_name: item for item in snapshot.items.all()}


def test_only_verified_clips_are_frozen(project, people):
    accepted = clip_in(project, "train")
    unreviewed = clip_in(project, "train")
    rejected = clip_in(project, "train")
    clip_in(project, "train")  # never annotated
    verified(accepted, people, ["calm"])
    submitted(unreviewed, people["alice"], ["sad"])
    reviews.review(submitted(rejected, people["bob"], ["angry"]), reviewer=people["rita"], decision="reject",
                   reason="wrong clip")

    snapshot = snapshots.freeze(project, actor=people["rita"])

    assert set(items(snapshot)) == {accepted.name}
    assert snapshot.clip_count == 1 and snapshot.created_by == people["rita"]
    assert SnapshotItem.objects.get().clip_id in selectors.verified_labels(project)


def test_labels_terms_families_people_and_split_are_frozen(project, people):
    train, test = clip_in(project, "train", transcript="I made it!"), clip_in(project, "test")
    annotation = verified(train, people, ["glad", "Cheery", "calm"])
    fixed = verified(test, people, ["sad"], by="bob", decision="fix",
                     fixed=[{"term": "joy"}, {"term": "upset"}])

    snapshot = snapshots.freeze(project)
    got = items(snapshot)

    first = got[train.name]
    assert first.labels == ["glad", "Cheery", "calm"]  # as verified, in order
    assert first.terms == ["happy", "cheerful", "calm"] and first.families == ["joy", "joy", "calm"]
    assert first.sha256 == train.sha256 and first.transcript == "I made it!"
    assert first.annotator_ids == [annotation.annotator_id] and first.reviewer_ids == [people["rita"].pk]
    assert first.split == selectors.clip_split(train) == "train"
    # A fix: the reviewer's labels, not the annotator's; the annotator is the reviewed annotation's author.
    second = got[test.name]
    assert second.labels == ["joy", "upset"] and second.terms[0] == "joyful" and second.families[0] == "joy"
    assert second.annotator_ids == [fixed.annotator_id] == [people["bob"].pk]
    assert second.split == selectors.clip_split(test) == "test"
    assert snapshot.split_counts == {"train": 1, "val": 0, "test": 1}
    assert snapshot.vocabulary_version == project.vocabulary_version
    assert snapshot.split_config == {"train": 0.8, "val": 0.1, "test": 0.1, "group_key": ""}


def test_the_reviewers_are_those_who_verified_the_accepted_version(project, people):
    clip = clip_in(project, "train")
    first = submitted(clip, people["alice"], ["sad"])
    reviews.review(first, reviewer=people["rex"], decision="reject", reason="listen again")
    queue.claim(people["alice"], clip)
    draft = annotating.start(people["alice"], clip)
    second = annotating.submit(draft, labels=["relieved"], base_version=draft.version)
    reviews.review(second, reviewer=people["rita"], decision="accept")

    item = items(snapshots.freeze(project))[clip.name]

    assert item.labels == ["relieved"] and item.reviewer_ids == [people["rita"].pk]
    assert item.annotator_ids == [people["alice"].pk]


def test_predictions_shown_are_those_made_before_the_submit(project, people):
    clip = clip_in(project, "train")
    before = timezone.now() - timedelta(hours=1)
    predict(clip, "internvl", "internvl:v1", ["calm"], at=before)
    # An older InternVL answer: the page showed the newest of each backend.
    predict(clip, "internvl", "internvl:v0", ["sad"], at=before - timedelta(hours=1))
    predict(clip, "fused", "fused:v1", ["calm", "happy"], at=before)
    verified(clip, people, ["calm"])
    predict(clip, "fused", "fused:v2", ["angry"])  # a re-pre-label after the submit: never shown

    shown = items(snapshots.freeze(project))[clip.name].predictions

    assert shown == [
        {"backend": "fused", "model_version": "fused:v1",
         "labels": [{"term": "calm", "score": 0.5, "source": "fused"},
                    {"term": "happy", "score": 0.5, "source": "fused"}]},
        {"backend": "internvl", "model_version": "internvl:v1",
         "labels": [{"term": "calm", "score": 0.5, "source": "internvl"}]},
    ]


def test_blind_clips_were_shown_no_predictions(project, people):
    test_clip = clip_in(project, "test")
    predict(test_clip, "fused", "fused:v1", ["calm"], at=timezone.now() - timedelta(hours=1))
    verified(test_clip, people, ["calm"])
    assert items(snapshots.freeze(project))[test_clip.name].predictions == []

    # A project that hides suggestions: a train clip is blind too.
    update_config(project, {"annotation": {"suggestions": "hide"}})
    train_clip = clip_in(project, "train")
    predict(train_clip, "fused", "fused:v1", ["calm"], at=timezone.now() - timedelta(hours=1))
    verified(train_clip, people, ["calm"])
    assert items(snapshots.freeze(project))[train_clip.name].predictions == []


def test_the_same_data_is_the_same_snapshot_and_new_data_a_new_one(project, people):
    first_clip = clip_in(project, "train")
    verified(first_clip, people, ["calm"])
    first = snapshots.freeze(project, actor=people["rita"])
    again = snapshots.freeze(project, actor=people["rita"], name="another name")

    assert again.pk == first.pk and DatasetSnapshot.objects.count() == 1
    assert AuditEvent.objects.filter(action="snapshot.frozen").count() == 1
    event = AuditEvent.objects.get(action="snapshot.frozen")
    assert event.object_id == str(first.pk) and event.changes["content_hash"] == first.content_hash
    assert event.actor == people["rita"]
    assert first.name == f"{project.slug}-{first.content_hash[:12]}"

    verified(clip_in(project, "val"), people, ["sad"])
    second = snapshots.freeze(project)
    assert second.pk != first.pk and second.content_hash != first.content_hash
    assert second.clip_count == 2 and first.items.count() == 1  # the first one did not change


def test_a_vocabulary_change_names_a_new_snapshot(project, people):
    verified(clip_in(project, "train"), people, ["calm"])
    first = snapshots.freeze(project)
    vocabulary.propose_term(project, "zoomfatigued")  # bumps the vocabulary version
    project.refresh_from_db()

    second = snapshots.freeze(project)

    assert second.vocabulary_version == first.vocabulary_version + 1
    assert second.content_hash != first.content_hash
    assert list(second.items.values_list("labels", flat=True)) == [["calm"]]


def test_a_concurrent_freeze_of_the_same_data_returns_the_winner(project, people, monkeypatch):
    verified(clip_in(project, "train"), people, ["calm"])
    real = snapshots._existing
    calls = []

    def racing(project, digest):
        calls.append(digest)
        if len(calls) == 1:
            # Another worker commits the same snapshot between our look-up and our insert.
            DatasetSnapshot.objects.create(project=project, name="the other worker's", content_hash=digest)
            return None
        return real(project, digest)

    monkeypatch.setattr(snapshots, "_existing", racing)
    snapshot = snapshots.freeze(project, name="mine")

    assert len(calls) == 2  # the insert failed on the unique hash, and the winner was fetched
    assert snapshot.name == "the other worker's" and DatasetSnapshot.objects.count() == 1
    assert not SnapshotItem.objects.exists()  # ours rolled back whole (the winner here has no items)
    assert not AuditEvent.objects.filter(action="snapshot.frozen").exists()


def test_a_name_in_use_by_other_data_is_refused(project, people):
    verified(clip_in(project, "train"), people, ["calm"])
    snapshots.freeze(project, name="v1")
    verified(clip_in(project, "train"), people, ["sad"])
    with pytest.raises(snapshots.SnapshotError, match="already named 'v1'"):
        snapshots.freeze(project, name="v1")
    assert DatasetSnapshot.objects.count() == 1


def test_filters_narrow_the_snapshot(project, people):
    anxious, calm_train = clip_in(project, "train"), clip_in(project, "train")
    calm_val = clip_in(project, "val")
    verified(anxious, people, ["anxious"])
    verified(calm_train, people, ["calm"])
    verified(calm_val, people, ["calm"])

    train_only = snapshots.freeze(project, filters={"split": "train"})
    assert set(items(train_only)) == {anxious.name, calm_train.name}
    narrowed = snapshots.freeze(project, filters={"split": "train", "label": "anxious"})
    assert set(items(narrowed)) == {anxious.name}
    assert narrowed.filters == {"split": "train", "label": "anxious"}
    with pytest.raises(snapshots.SnapshotError, match="Unknown filter: colour"):
        snapshots.freeze(project, filters={"colour": "red"})
    with pytest.raises(snapshots.SnapshotError, match="Invalid filter"):
        snapshots.freeze(project, filters={"split": "holdout"})
    with pytest.raises(snapshots.SnapshotError, match="No verified clips"):
        snapshots.freeze(project, filters={"label": "furious"})


def test_jsonl_is_byte_identical_and_readable_by_the_trainer(project, people, tmp_path):
    from django.conf import settings

    # Names against the creation order: the files must follow the names, not the ids.
    names = iter(["zeta", "eta", "theta", "delta", "beta", "alpha"])
    clips = {split: [clip_in(project, split, transcript=f"said in {split} ✓", name=next(names))
                     for _ in range(2)] for split in ("train", "val", "test")}
    expected = {}
    for pair in clips.values():
        for words, clip in zip((["Glad", "calm"], ["sad"]), pair, strict=True):
            verified(clip, people, words)
            expected[clip.name] = tuple(w.lower() for w in words)
    snapshot = snapshots.freeze(project)

    paths = snapshots.write_jsonl(snapshot, tmp_path / "a")
    again = snapshots.write_jsonl(snapshot, tmp_path / "b")
    rewritten = snapshots.write_jsonl(snapshot, tmp_path / "a")

    assert set(paths) == {"train", "val", "test"}
    for split in paths:
        data = paths[split].read_bytes()
        assert data == again[split].read_bytes() == rewritten[split].read_bytes()
        assert data.endswith(b"\n") and b"\r" not in data
        samples = read_samples(paths[split])
        ordered = sorted(clips[split], key=lambda c: c.name)
        assert ordered != clips[split]
        assert [s.video for s in samples] == [(settings.MEDIA_ROOT / c.file.name).resolve() for c in ordered]
        assert all(s.transcript == f"said in {split} ✓" for s in samples)
        assert [s.labels for s in samples] == [expected[c.name] for c in ordered]
    # A worker that mounts the media elsewhere.
    moved = snapshots.write_jsonl(snapshot, tmp_path / "c", media_root=tmp_path / "mnt")
    assert str(tmp_path / "mnt" / "clips") in moved["train"].read_text()


def test_a_snapshotted_clip_cannot_be_deleted_alone(project, people):
    clip = clip_in(project, "train")
    verified(clip, people, ["calm"])
    snapshots.freeze(project)
    with pytest.raises(RestrictedError, match="SnapshotItem"):
        clip.delete()


def test_a_frozen_item_is_never_edited(project, people):
    verified(clip_in(project, "train"), people, ["calm"])
    item = snapshots.freeze(project).items.get()
    item.labels = ["furious"]
    with pytest.raises(ValueError, match="immutable"):
        item.save()
    assert SnapshotItem.objects.get().labels == ["calm"]


def test_clips_are_read_in_chunks_with_a_fixed_number_of_queries(project, people, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(snapshots, "CHUNK", 2)
    vocabulary.project_vocabulary(project)  # cached from here on

    def queries_to_freeze(filters):
        with CaptureQueriesContext(connection) as captured:
            snapshot = snapshots.freeze(project, filters=filters)
        return len(captured), snapshot

    for _ in range(2):
        predict(verified(clip_in(project, "train"), people, ["calm"]).clip, "fused", "f:v1", ["calm"])
    small, _ = queries_to_freeze({"split": "train"})
    for _ in range(2):
        predict(verified(clip_in(project, "train"), people, ["sad"]).clip, "fused", "f:v1", ["sad"])
    for _ in range(2):
        verified(clip_in(project, "val"), people, ["calm"])
    # One chunk of two clips each time: the same queries, whatever the clips hold.
    same, _ = queries_to_freeze({"split": "val"})
    assert same == small
    # Three chunks of two: a fixed number of reads per chunk and one insert per chunk, never one per clip.
    large, snapshot = queries_to_freeze(None)
    assert snapshot.clip_count == 6 and snapshot.items.count() == 6
    # The hashing pass: keyset read, verified labels (2), annotations, reviews, predictions; the writing pass:
    # the same six again and the insert.
    per_chunk = 6 + 6 + 1
    assert large == small + 2 * per_chunk


def test_the_command_prints_name_hash_and_counts(project, people, tmp_path):
    verified(clip_in(project, "train"), people, ["calm"])
    verified(clip_in(project, "val"), people, ["calm"])
    verified(clip_in(project, "test"), people, ["sad"])
    out = io.StringIO()

    call_command("snapshot", "--project", project.slug, "--filter", "label=calm",
                 "--jsonl", str(tmp_path / "out"), stdout=out)

    snapshot = DatasetSnapshot.objects.get()
    assert out.getvalue().splitlines() == [
        f"snapshot {snapshot.name}", f"hash {snapshot.content_hash}", "train 1", "val 1", "test 0",
        *(f"wrote {tmp_path / 'out' / f'{split}.jsonl'}" for split in ("train", "val", "test"))]
    assert snapshot.filters == {"label": "calm"}
    assert (tmp_path / "out" / "test.jsonl").read_bytes() == b""


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_migration_goes_back_and_forward_with_snapshots_in_place():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    def migrate(target):
        executor = MigrationExecutor(connection)  # a fresh one: the loader caches what is applied
        executor.migrate([target])
        return executor.loader.project_state([target]).apps

    before, after = ("annotations", "0013_clip_list_indexes"), ("annotations", "0014_snapshot_contents")
    try:
        apps = migrate(before)
        project = apps.get_model("annotations", "Project").objects.create(name="Old", slug="old")
        clip = apps.get_model("annotations", "Clip").objects.create(
            project=project, file="clips/1.mp4", original_name="1.mp4", name="one", sha256="1" * 64,
            size_bytes=1)
        snapshot = apps.get_model("annotations", "DatasetSnapshot").objects.create(
            project=project, name="v1", content_hash="0" * 64, clip_count=1)
        apps.get_model("annotations", "SnapshotItem").objects.create(snapshot=snapshot, clip=clip,
                                                                     labels=["calm"], split="train")

        apps = migrate(after)
        item = apps.get_model("annotations", "SnapshotItem").objects.get()
        assert item.labels == ["calm"] and item.clip_name == "" and item.predictions == []
        assert apps.get_model("annotations", "DatasetSnapshot").objects.get().vocabulary_version == 1

        apps = migrate(before)
        columns = {c.name for c in connection.introspection.get_table_description(
            connection.cursor(), "annotations_snapshotitem")}
        assert "predictions" not in columns and "labels" in columns
        assert apps.get_model("annotations", "SnapshotItem").objects.get().labels == ["calm"]
    finally:
        migrate(("annotations", MigrationExecutor(connection).loader.graph.leaf_nodes("annotations")[0][1]))


def test_the_admin_shows_snapshots_but_never_changes_or_deletes_them(client, django_user_model, project):
    from django.urls import reverse

    from annotations.models import DatasetSnapshot

    snapshot = DatasetSnapshot.objects.create(project=project, name="v1", content_hash="a" * 64)
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(root)
    assert client.get(reverse("admin:annotations_datasetsnapshot_change", args=[snapshot.pk])).status_code == 200
    assert client.post(reverse("admin:annotations_datasetsnapshot_delete", args=[snapshot.pk]),
                       {"post": "yes"}).status_code == 403
    client.post(reverse("admin:annotations_datasetsnapshot_change", args=[snapshot.pk]),
                {"name": "renamed", "content_hash": "b" * 64, "project": project.pk})
    snapshot.refresh_from_db()
    assert snapshot.name == "v1" and snapshot.content_hash == "a" * 64


def test_a_clip_changed_between_the_two_passes_makes_the_freeze_read_again(project, people, monkeypatch):
    """Hashing and writing read the clips separately (so a large project's items never sit in memory at
    once): a verdict that changes in between must not give a snapshot whose hash names other content."""
    first = verified(clip_in(project, "train"), people, ["calm"])
    verified(clip_in(project, "val"), people, ["sad"])
    original, calls = snapshots._write, []

    def write_after_a_fix(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # a reviewer fixes the first clip's labels between the passes
            from annotations.services import reviews

            reviews.review(first, reviewer=people["rex"], decision="fix", fixed_labels=["relieved"],
                           version=first.version)
        return original(*args, **kwargs)

    monkeypatch.setattr(snapshots, "_write", write_after_a_fix)
    snapshot = snapshots.freeze(project)
    assert len(calls) == 2  # the first write saw the change and started over
    item = snapshot.items.get(clip=first.clip)
    assert item.labels == ["relieved"]
    rows = [{"clip_name": i.clip_name, "sha256": i.sha256, "transcript": i.transcript, "labels": i.labels,
             "terms": i.terms, "families": i.families, "split": i.split, "annotator_ids": i.annotator_ids,
             "reviewer_ids": i.reviewer_ids, "predictions": i.predictions} for i in snapshot.items.all()]
    assert snapshot.content_hash == snapshots.content_hash(
        rows, vocabulary_version=snapshot.vocabulary_version, split_config=snapshot.split_config)
