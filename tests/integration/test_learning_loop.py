"""Proof that it learns (issue 10, item 7): the whole loop on the CPU, through a real Celery worker.

Generated clips whose colour tells the emotion are verified through the annotating and review services; a few
unlabeled clips of known colours wait for pre-labels. A real worker (celery's `start_worker`, solo pool,
consuming the train, gpu and default queues, on the broker the test settings name: memory:// here, Redis on
CI, as in test_prelabel_workers.py) then:

1. registers the configured base (a tiny random InternVL) and pre-labels the unlabeled clips with it: it does
   not name their emotion;
2. takes the run that training.start_run dispatched on commit, LoRA-trains the base on the verified clips
   through the real entry point (services.training.execute -> ml.train), scores it on the snapshot's test
   split (services.evaluation) and auto-promotes it (config.training.auto_promote, min_test_clips 16);
3. on that promotion (registry.promote -> prelabel.models_changed) queues the waiting clips again, and
   pre-labels them with the new adapter: now it names their emotion.

Once the worker runs, the test's own thread calls only what a web process or beat calls (enqueue_prelabel,
start_run) and reads the database; the worker does the rest. The clips' transcripts are neutral lines
(generate_colour_clips): the colour alone carries the emotion, so what is learnt is from the frames.
"""

import time

import pytest
from celery.contrib.testing.worker import start_worker

from annotations.models import Clip, ModelVersion, Prediction, TrainingRun
from annotations.services import prelabel, prelabel_run, registry, training
from config.celery import app
from tests.annotations import training_fixtures as shared

from ..conftest import needs_ffmpeg
from .test_worker import wait_until

pytest.importorskip("torch", reason="the ml extra (torch) is not installed: the learning loop trains a model")
pytest.importorskip("peft", reason="the ml extra (peft) is not installed: the learning loop trains a LoRA adapter")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, needs_ffmpeg]
model_dir, one_thread, people = shared.model_dir, shared.one_thread, shared.people  # the shared fixtures

# The colour task of tests/annotations/test_evaluation.py: 32 training clips, 80 steps of batch 8 at lr 5e-3,
# r 8, 4 frames; 16 held-out test clips, the fewest the promotion rule is told to accept.
TRAINING = {"base_model": "tiny56", "lora_rank": 8, "learning_rate": 5e-3, "batch_size": 8, "grad_accum": 1,
            "epochs": 20, "num_frames": 4, "auto_promote": True, "promote_margin": 0.2, "min_test_clips": 16}
PRELABEL = {"backends": {"internvl": {"model": "tiny56", "num_frames": 4}}, "batch_size": 8}
worker_settings = shared.worker_fixture({"num_workers": 0, "max_new_tokens": 12, "log_every": 10,
                                         "eval_every": 80})
SPLITS = ["train"] * 32 + ["val"] * 4 + ["test"] * 16
UNLABELED = 8  # two clips of each colour emotion, never seen in training


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from ml.testing.samples import generate_colour_clips

    labeled = generate_colour_clips(tmp_path_factory.mktemp("verified"), len(SPLITS), seed=2)
    unlabeled = generate_colour_clips(tmp_path_factory.mktemp("unlabeled"), UNLABELED, seed=31)
    return labeled, unlabeled


def unlabeled_clips(project, videos, media_root) -> dict[int, str]:
    """The clips to pre-label, ready and unlabeled as after ingest: clip id -> the emotion of its colour."""
    import shutil

    (media_root / "clips").mkdir(parents=True, exist_ok=True)
    out = {}
    for video in videos:
        name = f"clips/{video.path.name}"
        shutil.copy(video.path, media_root / name)
        clip = Clip.objects.create(project=project, file=name, sha256=shared.key_in("train"), name=video.path.name,
                                   size_bytes=video.path.stat().st_size, status=Clip.Status.READY,
                                   duration=0.5, transcript=video.transcript)
        out[clip.pk] = video.labels[0]
    return out


def internvl_terms(version: str) -> dict[int, list[str]]:
    return {p.clip_id: [label["term"] for label in p.labels]
            for p in Prediction.objects.filter(backend="internvl", model_version=version)}


def named_right(terms: dict[int, list[str]], truth: dict[int, str]) -> int:
    return sum(truth[clip_id] in found for clip_id, found in terms.items())


def test_verified_clips_teach_the_next_prelabels_their_emotion(project, people, videos, worker_settings,
                                                                settings, monkeypatch):
    from ml.versions import adapter_id, prediction_version

    monkeypatch.delenv("AFFECTLOOP_WHEEL_DIR", raising=False)  # the term-level figures are under test
    labeled, unlabeled = videos
    shared.verify_clips(project, people, labeled, SPLITS, settings.MEDIA_ROOT)  # eager, before any model exists
    project.config = {"prelabel": PRELABEL, "training": TRAINING}
    project.save(update_fields=["config"])
    truth = unlabeled_clips(project, unlabeled, settings.MEDIA_ROOT)

    prelabel_run.model_cache().clear()
    app.conf.task_always_eager = False
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["train", "gpu", "default"],
                          shutdown_timeout=60):
            # 1. The base pre-labels the waiting clips (a worker registers the configured model first).
            assert prelabel.enqueue_prelabel(project) == 0
            assert wait_until(lambda: Prediction.objects.filter(backend="fused").count() == UNLABELED,
                              timeout=120), list(Clip.objects.values_list("prelabel_error", flat=True))
            base = ModelVersion.objects.get(project=project, backend="internvl", status="active")
            assert base.base_model == "tiny56" and not base.adapter_path
            base_version = prediction_version(base.name, 4)
            before = internvl_terms(base_version)
            assert set(before) == set(truth)

            # 2. A manager starts a run; its on-commit dispatch reaches the train queue.
            started = time.monotonic()
            run = training.start_run(project, actor=people["maria"])
            assert run.snapshot.split_counts == {"train": 32, "val": 4, "test": 16}
            assert wait_until(lambda: TrainingRun.objects.get(pk=run.pk).status in ("succeeded", "failed"),
                              timeout=240), TrainingRun.objects.get(pk=run.pk).log[-3000:]
            trained_s = time.monotonic() - started
            run.refresh_from_db()
            assert run.status == "succeeded", (run.error, run.log[-3000:])
            assert run.attempts == 1 and "[worker] start 1 of run" in run.log  # taken once, by the worker
            candidate = ModelVersion.objects.get(training_run=run)
            new_version = prediction_version(candidate.name, 4)

            # 3. Promoted, so the waiting clips are queued again and pre-labeled with the adapter.
            assert wait_until(lambda: len(internvl_terms(new_version)) == UNLABELED, timeout=120), (
                candidate.status, list(Clip.objects.values_list("prelabel_error", flat=True)))
    finally:
        app.conf.task_always_eager = True
        prelabel_run.model_cache().clear()

    # The stored evaluation, on the held-out test split: the base knew nothing, the candidate learned.
    candidate.refresh_from_db()
    result = candidate.metrics["evaluation"]
    assert result["split"] == "test" and result["n"] == 16
    assert result["base"]["f"] < 0.2, result["per_clip"]
    assert result["candidate"]["f"] > 0.8, result["per_clip"]
    assert result["models"]["candidate"]["adapter"] == run.output_path

    # Auto-promoted by the rule, the base retired.
    assert result["promotion"]["promoted"], result["promotion"]["reasons"]
    candidate.refresh_from_db()
    base.refresh_from_db()
    assert candidate.status == "active" and candidate.adapter_path == run.output_path
    assert base.status == "retired"

    # The next pre-labels come from the adapter and name each clip's colour emotion; the base's did not.
    after = internvl_terms(new_version)
    for prediction in Prediction.objects.filter(backend="internvl", model_version=new_version):
        assert prediction.model_id == candidate.pk
    # Its version names the adapter: the identity of the adapter's weights, not the bare base's.
    assert new_version.startswith(candidate.name + "+") and candidate.name != base.name
    assert candidate.name == f"internvl:tiny56+{adapter_id(registry.resolve(candidate.adapter_path))}"
    right_after, right_before = named_right(after, truth), named_right(before, truth)
    report = {"truth": truth, "base": before, "adapter": after, "trained_s": round(trained_s, 1)}
    assert right_after >= UNLABELED * 3 // 4, report  # most clips (one red clip of seed 31 comes out "ad")
    assert right_before <= 1, report
    print(f"\nlearning loop: test F base {result['base']['f']:.3f} -> candidate {result['candidate']['f']:.3f}; "
          f"unlabeled named right: base {right_before}/{UNLABELED}, adapter {right_after}/{UNLABELED}; "
          f"train+evaluate+promote {trained_s:.1f} s")
