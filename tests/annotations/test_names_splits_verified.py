"""Clip names (unique per project, derived from the import path), the one split rule, and the one rule for
"verified"."""

import importlib
import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from annotations import selectors
from annotations.models import Annotation, Clip, Review
from annotations.services.ingest import clip_name_for
from ml.splits import split_of

from ..conftest import needs_ffmpeg

pytestmark = pytest.mark.django_db


def test_a_name_is_the_relative_path_without_its_extension():
    assert clip_name_for("s01/e02/clip.mp4") == "s01/e02/clip"
    assert clip_name_for("upload.final.MOV") == "upload.final"
    assert clip_name_for("noext") == "noext"


@needs_ffmpeg
def test_ingest_names_clips_and_rejects_a_name_collision(project, clip_folder):
    first = sorted(clip_folder.glob("*.mp4"))[0]
    (clip_folder / "sub").mkdir()
    out = io.StringIO()
    call_command("import_clips", str(clip_folder), "--project", project.slug, stdout=out, stderr=io.StringIO())
    names = set(Clip.objects.values_list("name", flat=True))
    assert first.stem in names and len(names) == 4
    # Different content under an existing name (a re-encode of the same take in another import root):
    # rejected, naming the clip that holds the name; nothing is stored.
    import subprocess

    other = clip_folder.parent / "other"
    other.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(first), "-c:v", "libx264", "-crf", "40",
                    "-c:a", "copy", str(other / first.name)], check=True)
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("import_clips", str(other), "--project", project.name, stdout=out, stderr=io.StringIO())
    holder = Clip.objects.get(name=first.stem)
    assert out.getvalue().strip() == (f"rejected {first.name}: the name '{first.stem}' is already used by clip "
                                      f"{holder.pk} in this project (different content)")
    assert Clip.objects.count() == 4


def test_the_migration_suffixes_clashing_names():
    migration = importlib.import_module("migrations.0004_clip_name_registry_identity")
    assert migration.clip_name("a/b.mp4", {"import_path": "x/y.mkv"}) == "x/y"
    assert migration.clip_name("up.mp4", {}) == "up"


def test_the_split_is_a_fixed_function_of_the_key_and_the_ratios():
    keys = [f"{i:064x}" for i in range(3000)]
    splits = [split_of(k, 0.8, 0.1, 0.1) for k in keys]
    assert splits == [split_of(k, 0.8, 0.1, 0.1) for k in keys]  # deterministic
    shares = {s: splits.count(s) / len(keys) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.02
    assert split_of("speaker-7", 0.8, 0.1, 0.1) == split_of("speaker-7", 0.8, 0.1, 0.1)
    assert {split_of(k, 1, 0, 0) for k in keys[:100]} == {"train"}
    with pytest.raises(ValueError):
        split_of("k", 0, 0, 0)


def _clip(project, n):
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", original_name=f"{n}.mp4", name=f"c{n}",
                               sha256=f"{n:064x}", size_bytes=10)


def _submitted(clip, user, terms):
    return Annotation.objects.create(clip=clip, annotator=user, labels=[{"term": t, "source": "human"} for t in terms],
                                     status="submitted", submitted_at=timezone.now())


def test_the_latest_accept_or_fix_verifies_and_a_later_reject_unverifies(project, annotator, manager,
                                                                         django_user_model):
    bob = django_user_model.objects.create_user("bob", password="pw-bob-12345")
    accepted, fixed, rejected, unreviewed = (_clip(project, n) for n in range(1, 5))
    a1 = _submitted(accepted, annotator, ["calm"])
    _submitted(accepted, bob, ["angry"])  # another annotation of the clip: agreement data only
    Review.objects.create(annotation=a1, reviewer=manager, decision="accept", annotation_version=1)
    a2 = _submitted(fixed, annotator, ["sad"])
    Review.objects.create(annotation=a2, reviewer=manager, decision="fix", annotation_version=1,
                          fixed_labels=[{"term": "grieving"}, {"term": "tired"}])
    a3 = _submitted(rejected, annotator, ["happy"])
    Review.objects.create(annotation=a3, reviewer=manager, decision="accept", annotation_version=1)
    Review.objects.create(annotation=a3, reviewer=bob, decision="reject", reason="missed the sarcasm",
                          annotation_version=1)
    _submitted(unreviewed, annotator, ["bored"])
    assert set(selectors.verified_clips(project.clips.all()).values_list("pk", flat=True)) == {accepted.pk, fixed.pk}
    assert selectors.verified_labels(project) == {accepted.pk: ["calm"], fixed.pk: ["grieving", "tired"]}


def test_a_trusted_annotators_submit_is_accepted_automatically_once_the_overlap_is_met(project, annotator,
                                                                                      manager, django_user_model):
    from annotations.models import Role
    from annotations.services import projects, reviews

    projects.update_config(project, {"annotation": {"overlap": 2}})
    bob = django_user_model.objects.create_user("bob", password="pw-bob-12345")
    projects.set_membership(project=project, user=annotator, role=Role.ANNOTATOR, trusted=True, actor=manager)
    projects.set_membership(project=project, user=bob, role=Role.ANNOTATOR, actor=manager)
    clip = _clip(project, 9)
    first = _submitted(clip, annotator, ["calm"])
    assert reviews.annotation_submitted(first) is None  # overlap 2 not met yet: no automatic accept
    clip.refresh_from_db()
    assert clip.label_state == "in_progress"
    second = _submitted(clip, bob, ["relaxed"])
    assert reviews.annotation_submitted(second) is None  # bob is not trusted
    clip.refresh_from_db()
    assert clip.label_state == "submitted"
    auto = reviews.annotation_submitted(first)
    assert auto.automatic and auto.reviewer == annotator and auto.decision == "accept"
    clip.refresh_from_db()
    assert clip.label_state == "verified" and clip.verified_at is not None
    assert selectors.verified_labels(project) == {clip.pk: ["calm"]}
    # A later reject un-verifies it, and the state follows: the rejected annotation is its author's draft again.
    reviews.review(first, reviewer=manager, decision="reject", reason="not calm: tense")
    clip.refresh_from_db()
    first.refresh_from_db()
    assert first.status == "draft" and first.version == 2
    assert clip.label_state == "in_progress" and clip.verified_at is None
    with pytest.raises(reviews.ReviewError):
        reviews.review(first, reviewer=manager, decision="reject", reason=" ")
