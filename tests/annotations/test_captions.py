"""Human-centric captions (services.captions, task affectloop.gpu.caption_clips): the agreement filter, the
captioning task on a tiny random InternVL through the real backend, captions.jsonl without evaluation clips,
and a training run that mixes captions in at config.training.caption_ratio."""

import json
import os
import shutil
from pathlib import Path

import pytest

from annotations import tasks
from annotations.models import Caption, Clip, ModelVersion, Prediction
from annotations.services import captions, prelabel, projects, registry, snapshots
from ml.prompts import INTERNVL_CAPTION_PROMPT_VERSION
from tests.annotations import training_fixtures as shared
from tests.conftest import skip_without_ffmpeg

pytestmark = pytest.mark.django_db
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAINING = {"base_model": "tiny56", "lora_rank": 8, "learning_rate": 5e-3, "batch_size": 4, "grad_accum": 1,
            "epochs": 2, "num_frames": 4}

model_dir, one_thread, people, start = shared.model_dir, shared.one_thread, shared.people, shared.start
worker = shared.worker_fixture({"num_workers": 0, "max_new_tokens": 8, "log_every": 1})


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory) -> list:
    skip_without_ffmpeg()
    from ml.testing.samples import generate_colour_clips

    return generate_colour_clips(tmp_path_factory.mktemp("colour"), 14, seed=1)


def unverified_clip(project, media_root, video=None, *, split="", name=None) -> Clip:
    """A ready clip nobody has verified (its file copied into the media folder when a video is given)."""
    name = name or (video.path.name if video else f"plain-{Clip.objects.count()}.mp4")
    (Path(media_root) / "clips").mkdir(parents=True, exist_ok=True)
    if video is not None:
        shutil.copy(video.path, Path(media_root) / "clips" / name)
    return Clip.objects.create(project=project, file=f"clips/{name}", sha256=shared.key_in("train"), name=name,
                               size_bytes=1, status=Clip.Status.READY, duration=0.5, split=split,
                               transcript=video.transcript if video else "I am fine, I guess.")


def fuse(clip, terms):
    Prediction.objects.create(clip=clip, backend="fused", model_version="fused:test+1",
                              labels=[{"term": t, "score": 0.9, "source": "fused"} for t in terms])


def kept_caption(clip, text="The person smiles widely and sounds happy.") -> Caption:
    return Caption.objects.create(clip=clip, text=text, model_version="internvl:test", prompt_version="ivl-cap1",
                                  labels=["happy"], fused_labels=["happy"], agreement=1.0, kept=True)


# --- the agreement filter -------------------------------------------------------------------------------

def test_jaccard_and_the_keep_rule():
    assert captions.jaccard(["happy", "excited"], ["happy"]) == 0.5
    assert captions.agreement(["happy", "excited"], ["happy"], 0.5) == (0.5, True)
    assert captions.agreement(["happy", "excited"], ["happy"], 0.6) == (0.5, False)
    assert captions.agreement([], ["happy"], 0.0) == (0.0, False)  # a caption naming no emotion is not kept
    assert captions.agreement(["happy"], [], 0.0) == (0.0, False)  # nor one of a clip without pre-labels


def test_a_caption_is_kept_only_where_its_terms_agree_with_the_fused_prelabels(project, settings):
    agree, disagree, bare = (unverified_clip(project, settings.MEDIA_ROOT) for _ in range(3))
    for clip in (agree, disagree):
        fuse(clip, ["happy", "excited"])
    kw = {"model_version": "internvl:x", "prompt_version": "ivl-cap1"}
    kept = captions.store_caption(agree, "He grins, looks happy and not worried at all.", **kw)
    assert kept.kept and kept.labels == ["happy"] and kept.fused_labels == ["happy", "excited"]
    assert kept.agreement == 0.5  # the default config.training.caption_agreement is 0.5: kept
    dropped = captions.store_caption(disagree, "She frowns and looks worried and anxious.", **kw)
    assert not dropped.kept and dropped.agreement == 0.0 and dropped.labels == ["worried", "anxious"]
    no_prelabels = captions.store_caption(bare, "He looks happy.", **kw)
    assert not no_prelabels.kept and no_prelabels.fused_labels == []
    assert Prediction.objects.filter(backend="internvl").count() == 0  # captions are not predictions

    # A stricter threshold drops the half-agreeing caption once reassessed.
    projects.update_config(project, {"training": {"caption_agreement": 0.6}})
    project.refresh_from_db()
    assert captions.reassess(project) == 1
    kept.refresh_from_db()
    assert not kept.kept and kept.agreement == 0.5
    # The same clip, model and prompt version again: nothing new.
    assert captions.store_caption(agree, "Another text.", **kw) is None
    assert Caption.objects.filter(clip=agree).count() == 1


# --- the captioning task, through the real InternVL backend ---------------------------------------------

def test_the_task_captions_unverified_clips_once_with_the_prompt_version(
        project, people, colour_videos, settings, model_dir, one_thread):
    settings.MODEL_DIR = model_dir
    projects.update_config(project, {"prelabel": {"backends": {"internvl": {"model": "tiny56", "num_frames": 2}},
                                                  "batch_size": 4}})
    project.refresh_from_db()
    version = registry.register_model(project, "internvl", model="tiny56", activate=True)
    verified = shared.verify_clips(project, people, colour_videos[:1], ["train"], settings.MEDIA_ROOT)[0]
    clips = [unverified_clip(project, settings.MEDIA_ROOT, v) for v in colour_videos[1:3]]
    fuse(clips[0], ["happy"])
    run = next(r for r in prelabel.plan(project).runs if r.backend == "internvl")
    from annotations.services import prelabel_run

    prelabel_run.model_cache().clear()
    try:
        stats = tasks.caption_clips([verified.pk, *(c.pk for c in clips)])
        assert stats["stored"] == 2 and stats["errors"] == 0, stats
        rows = list(Caption.objects.order_by("clip_id"))
        assert [r.clip_id for r in rows] == [c.pk for c in clips]  # none for the verified clip
        assert all(r.prompt_version == INTERNVL_CAPTION_PROMPT_VERSION == "ivl-cap1" for r in rows)
        assert all(r.model_version == run.version and r.model == version and r.text for r in rows)
        assert rows[1].fused_labels == [] and not rows[1].kept  # no pre-labels: never kept

        again = tasks.caption_clips([c.pk for c in clips])  # a redelivered message adds nothing
        assert again["stored"] == 0 and again["skipped"] == 2
        assert Caption.objects.count() == 2
    finally:
        prelabel_run.model_cache().clear()


def test_enqueue_sends_only_prelabelled_unverified_clips_without_a_caption(
        project, people, colour_videos, settings, model_dir, django_capture_on_commit_callbacks):
    settings.MODEL_DIR = model_dir
    projects.update_config(project, {"prelabel": {"backends": {"internvl": {"model": "tiny56", "num_frames": 2}}}})
    project.refresh_from_db()
    registry.register_model(project, "internvl", model="tiny56", activate=True)
    shared.verify_clips(project, people, colour_videos[:1], ["train"], settings.MEDIA_ROOT)
    done, todo, _not_prelabelled = (unverified_clip(project, settings.MEDIA_ROOT) for _ in range(3))
    for clip in (done, todo):
        fuse(clip, ["happy"])
    version = next(r for r in prelabel.plan(project).runs if r.backend == "internvl").version
    Caption.objects.create(clip=done, text="x", model_version=version, prompt_version="ivl-cap1")
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert tasks.enqueue_captions(project.pk) == {project.slug: 1}
    assert len(sent) == 1


# --- captions.jsonl -------------------------------------------------------------------------------------

@pytest.fixture
def verified_clips(project, people, colour_videos, settings):
    project.config = {"training": TRAINING}
    project.save(update_fields=["config"])
    return shared.verify_clips(project, people, colour_videos[:10], ["train"] * 8 + ["val"] * 2,
                               settings.MEDIA_ROOT)


def test_captions_jsonl_holds_kept_captions_and_never_an_evaluation_clip(
        project, people, verified_clips, colour_videos, settings, tmp_path):
    snapshot = snapshots.freeze(project, actor=people["maria"])
    val_clip = snapshot.items.filter(split="val").first().clip
    train_clip = snapshot.items.filter(split="train").first().clip
    fresh = unverified_clip(project, settings.MEDIA_ROOT, colour_videos[10])
    stored_test = unverified_clip(project, settings.MEDIA_ROOT, colour_videos[11], split="test")
    dropped = unverified_clip(project, settings.MEDIA_ROOT, colour_videos[12])
    for clip in (val_clip, train_clip, fresh, stored_test):
        kept_caption(clip)
    Caption.objects.create(clip=dropped, text="He looks sad.", model_version="internvl:test",
                           prompt_version="ivl-cap1", labels=["sad"], fused_labels=["happy"], agreement=0.0)

    path, n = captions.write_jsonl(snapshot, tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert n == len(lines) == 2
    assert {Path(line["video"]).name for line in lines} == {train_clip.name, fresh.name}
    assert all(set(line) == {"video", "transcript", "caption"} and line["caption"] for line in lines)
    assert all(Path(line["video"]).is_absolute() for line in lines)


# --- a run with captions --------------------------------------------------------------------------------

def test_a_run_with_caption_ratio_mixes_kept_captions_and_records_how_many(
        project, people, verified_clips, colour_videos, worker, settings, django_capture_on_commit_callbacks):
    for video in colour_videos[10:14]:
        kept_caption(unverified_clip(project, settings.MEDIA_ROOT, video))
    ModelVersion.objects.create(project=project, backend="internvl", name="internvl:tiny56+base",
                                base_model="tiny56", status="active")
    run = start(project, people, django_capture_on_commit_callbacks, overrides={"caption_ratio": 0.5})
    assert tasks.train_run(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.config["captions"] == {"available": 4, "ratio": 0.5}
    data = worker / "training" / project.slug / Path(run.output_path).name
    assert (data / "captions.jsonl").read_text().count("\n") == 4
    lineage = ModelVersion.objects.get(training_run=run).metrics
    assert lineage["captions"] == 4 and lineage["caption_ratio"] == 0.5  # round(0.5 x 8 labelled samples)


def test_a_run_asking_for_captions_when_none_are_kept_fails_clearly(
        project, people, verified_clips, worker, django_capture_on_commit_callbacks):
    run = start(project, people, django_capture_on_commit_callbacks, overrides={"caption_ratio": 0.5})
    assert tasks.train_run(run.pk) == "failed"
    run.refresh_from_db()
    assert "no kept captions" in run.error and "captions" not in run.config


def test_the_beat_captions_only_projects_that_mix_captions_in(project):
    from annotations.services import captions as captions_service
    from annotations.services.projects import update_config

    assert not captions_service.wanted(project)  # caption_ratio 0 by default: no GPU time spent on captions
    update_config(project, {"training": {"caption_ratio": 0.5}})
    project.refresh_from_db()
    assert captions_service.wanted(project)
