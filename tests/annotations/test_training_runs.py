"""Training runs (services.training, tasks affectloop.train.run / .watch): started from verified clips, run on
the CPU with a tiny random InternVL saved in a temporary model directory, cancelled, failed, watched.

The clips are solid-colour videos (ml.testing.samples.generate_colour_clips) stored as ready clips of the
project and verified through the annotating and review services. The task function is called directly (the
broker's dispatch on commit is captured, not run), as a train worker would call it.
"""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from annotations import tasks
from annotations.models import AuditEvent, DatasetSnapshot, ModelVersion, TrainingRun
from annotations.services import training
from tests.annotations import training_fixtures as shared
from tests.conftest import skip_without_ffmpeg

pytestmark = pytest.mark.django_db
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tiny and fast: 8 training clips in batches of 4, 2 epochs = 4 steps; 2 validation clips.
TRAINING = {"base_model": "tiny56", "lora_rank": 8, "learning_rate": 5e-3, "batch_size": 4, "grad_accum": 1,
            "epochs": 2, "num_frames": 4}
WORKER = {"num_workers": 0, "max_new_tokens": 8, "log_every": 1}


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory) -> list:
    skip_without_ffmpeg()
    from ml.testing.samples import generate_colour_clips

    return generate_colour_clips(tmp_path_factory.mktemp("colour"), 10, seed=1)


model_dir, one_thread, people, start = shared.model_dir, shared.one_thread, shared.people, shared.start
worker = shared.worker_fixture(WORKER)


@pytest.fixture
def verified_clips(project, people, colour_videos, settings):
    """The colour clips as ready clips of the project (files in MEDIA_ROOT; the first 8 in the train split,
    the last 2 in validation), each annotated with its emotion and accepted by a reviewer."""
    project.config = {"training": TRAINING}
    project.save(update_fields=["config"])
    return shared.verify_clips(project, people, colour_videos, ["train"] * 8 + ["val"] * 2, settings.MEDIA_ROOT)


# --- starting -------------------------------------------------------------------------------------------

def test_start_run_freezes_the_verified_clips_and_refuses_a_second_live_run(
        project, people, verified_clips, django_capture_on_commit_callbacks):
    run = start(project, people, django_capture_on_commit_callbacks, overrides={"epochs": 3})
    assert run.status == "queued" and run.created_by == people["maria"]
    assert run.snapshot.clip_count == 10 and run.snapshot.split_counts == {"train": 8, "val": 2, "test": 0}
    assert run.config["training"]["epochs"] == 3 and run.config["training"]["learning_rate"] == 5e-3
    assert run.config["overrides"] == {"epochs": 3}
    event = AuditEvent.objects.get(action="training.started")
    assert event.object_id == str(run.pk) and event.changes["snapshot"] == run.snapshot.name

    with pytest.raises(training.TrainingError, match="already queued or running"):
        training.start_run(project, actor=people["maria"])
    assert TrainingRun.objects.count() == 1 and DatasetSnapshot.objects.count() == 1


def test_the_database_refuses_a_concurrent_second_run_with_the_same_clear_error(
        project, people, verified_clips, django_capture_on_commit_callbacks, monkeypatch):
    start(project, people, django_capture_on_commit_callbacks)
    monkeypatch.setattr(training, "LIVE", ())  # as if a concurrent start passed the check at the same moment
    with pytest.raises(training.TrainingError, match="already queued or running"):
        training.start_run(project, actor=people["maria"])
    assert TrainingRun.objects.count() == 1


@pytest.mark.parametrize("overrides,message", [
    ({"learning_rate": "fast"}, "config.training.learning_rate must be a number"),
    ({"epochs": 0}, "config.training.epochs must be an integer 1..100"),
    ({"lora_rnk": 8}, "config.training.lora_rnk is not a known key"),
    ({"split": {"train": 0.5, "val": 0.5, "test": 0}}, "cannot be overridden"),
])
def test_bad_overrides_are_refused_naming_the_key(project, people, verified_clips, overrides, message):
    with pytest.raises(training.TrainingError, match=message):
        training.start_run(project, actor=people["maria"], overrides=overrides)
    assert not TrainingRun.objects.exists()


def test_a_run_needs_verified_clips(project, people):
    with pytest.raises(training.TrainingError, match="No verified clips"):
        training.start_run(project, actor=people["maria"])


# --- the task, end to end -------------------------------------------------------------------------------

def test_the_task_trains_registers_a_candidate_and_runs_only_once(
        project, people, verified_clips, worker, django_capture_on_commit_callbacks, monkeypatch):
    active = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:tiny56+base",
                                         base_model="tiny56", status="active")
    run = start(project, people, django_capture_on_commit_callbacks)
    assert run.base_model == active

    assert tasks.train_run(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.status == "succeeded" and run.error == "" and run.progress == 1.0
    assert run.attempts == 1 and run.started_at and run.finished_at and run.heartbeat_at
    assert [m["step"] for m in run.metrics] == [1, 2, 3, 4]
    assert all(m["loss"] is not None and m["lr"] >= 0 for m in run.metrics)
    assert [m["step"] for m in run.metrics if "eval" in m] == [2, 4]  # an evaluation at each epoch's end
    assert {"eval_loss", "exact_match", "f"} <= set(run.eval_metrics)
    assert "step 4/4" in run.log and "candidate internvl:tiny56+run-" in run.log

    out = worker / run.output_path
    assert run.output_path.startswith(f"adapters/{project.slug}/run-{run.pk}-")
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics.json", "training_config.json"} <= \
        {p.name for p in out.iterdir()}
    data = worker / "training" / project.slug / Path(run.output_path).name
    assert (data / "train.jsonl").read_text().count("\n") == 8 and (data / "val.jsonl").is_file()
    assert run.config["train_config"]["base_model"] == str(worker / "tiny56")
    assert run.config["train_config"]["num_workers"] == 0

    candidate = ModelVersion.objects.get(training_run=run)
    assert candidate.status == "candidate" and candidate.parent == active
    assert candidate.base_model == "tiny56" and candidate.adapter_path == run.output_path
    assert candidate.adapter_sha256
    lineage = candidate.metrics
    assert lineage["snapshot"] == run.snapshot_id and lineage["snapshot_hash"] == run.snapshot.content_hash
    assert lineage["training_run"] == run.pk and lineage["config"]["lora_rank"] == 8
    assert lineage["data_hash"] and lineage["eval"] == run.eval_metrics
    assert AuditEvent.objects.filter(action="training.succeeded", object_id=str(run.pk)).exists()

    # A redelivered message, or a second one: nothing trains again.
    import ml.train

    monkeypatch.setattr(ml.train, "train", lambda *a, **k: pytest.fail("trained twice"))
    assert tasks.train_run(run.pk) == "skipped"
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 1
    assert ModelVersion.objects.filter(training_run=run).count() == 1


def test_a_run_can_continue_the_active_adapter_and_records_it(
        project, people, verified_clips, worker, django_capture_on_commit_callbacks):
    ModelVersion.objects.create(project=project, backend="internvl", name="internvl:tiny56+base",
                                base_model="tiny56", status="active")
    first = start(project, people, django_capture_on_commit_callbacks)
    assert tasks.train_run(first.pk) == "succeeded"
    parent = ModelVersion.objects.get(training_run=first)
    from annotations.services import registry

    registry.promote(parent, actor=people["maria"])

    second = start(project, people, django_capture_on_commit_callbacks, overrides={"continue_from_parent": True})
    assert second.base_model == parent
    assert tasks.train_run(second.pk) == "succeeded", second.error
    second.refresh_from_db()
    assert second.config["train_config"]["init_adapter"] == str(worker / parent.adapter_path)
    child = ModelVersion.objects.get(training_run=second)
    assert child.parent == parent and child.metrics["continued_from"] == parent.name

    # A fresh LoRA (the project's default) records no continuation; a bare base has nothing to continue.
    assert ModelVersion.objects.get(training_run=first).metrics["continued_from"] is None


def test_continuing_is_refused_on_another_base_or_without_the_parents_files(project, people, verified_clips):
    parent = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:tiny56+a",
                                         base_model="tiny56", adapter_path="adapters/x/run-1-aa", status="active")
    run = TrainingRun(project=project, base_model=parent,
                      config={"training": {"continue_from_parent": True, "base_model": "other"}})
    with pytest.raises(training.registry.RegistryError, match="trained on tiny56.*base_model is other"):
        training.parent_adapter(run)
    run.config["training"]["base_model"] = None
    assert training.parent_adapter(run) == "adapters/x/run-1-aa"
    parent.metrics = {"files_removed_at": "2026-01-01T00:00:00+00:00"}
    with pytest.raises(training.registry.RegistryError, match="adapter files were removed"):
        training.parent_adapter(run)
    run.config["training"]["continue_from_parent"] = False
    assert training.parent_adapter(run) is None


def test_a_run_already_running_is_left_alone(project, people, verified_clips, worker,
                                             django_capture_on_commit_callbacks, monkeypatch):
    import ml.train

    run = start(project, people, django_capture_on_commit_callbacks)
    TrainingRun.objects.filter(pk=run.pk).update(status="running", attempts=1, heartbeat_at=timezone.now())
    monkeypatch.setattr(ml.train, "train", lambda *a, **k: pytest.fail("trained twice"))
    assert tasks.train_run(run.pk) == "skipped"
    assert tasks.train_run(999999) == "skipped"
    run.refresh_from_db()
    assert run.status == "running" and run.attempts == 1


# --- cancelling -----------------------------------------------------------------------------------------

def test_cancel_before_a_worker_starts_cancels_at_once(project, people, verified_clips, worker,
                                                       django_capture_on_commit_callbacks):
    run = start(project, people, django_capture_on_commit_callbacks)
    run = training.cancel(run, actor=people["maria"])
    assert run.status == "cancelled" and run.finished_at is not None
    assert tasks.train_run(run.pk) == "skipped"  # its message arrives later: nothing runs
    run.refresh_from_db()
    assert run.status == "cancelled" and run.attempts == 0
    assert AuditEvent.objects.filter(action="training.cancelled", actor=people["maria"]).exists()
    with pytest.raises(training.TrainingError, match="already ended"):
        training.cancel(run, actor=people["maria"])
    start(project, people, django_capture_on_commit_callbacks)  # no longer live: a new run may start


def test_cancel_during_training_stops_at_a_checkpoint(project, people, verified_clips, worker,
                                                      django_capture_on_commit_callbacks, monkeypatch):
    import ml.train

    run = start(project, people, django_capture_on_commit_callbacks)
    real_train = ml.train.train

    def train_and_cancel_after_step_one(*args, progress, **kwargs):
        def report(p):
            progress(p)
            if p.step == 1:  # a manager presses "stop" while the worker trains
                stopping = training.cancel(TrainingRun.objects.get(pk=run.pk), actor=people["maria"])
                assert stopping.status == "running" and stopping.cancel_requested  # live until it stops
        return real_train(*args, progress=report, **kwargs)

    monkeypatch.setattr(ml.train, "train", train_and_cancel_after_step_one)
    monkeypatch.setattr(training, "WRITE_EVERY_S", 0.0)  # check the request at every step
    outcome = tasks.train_run(run.pk)
    run.refresh_from_db()
    assert outcome == "cancelled", run.log[-3000:]
    assert run.status == "cancelled" and run.finished_at is not None
    assert [m["step"] for m in run.metrics] == [1]
    assert "stopped at step 1; checkpoint step-00000001" in run.log
    assert (worker / run.output_path / "checkpoints" / "step-00000001").is_dir()
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert AuditEvent.objects.filter(action="training.cancel_requested").exists()


# --- failing --------------------------------------------------------------------------------------------

def test_a_missing_clip_file_fails_the_run_naming_the_sample(project, people, verified_clips, worker, settings,
                                                             django_capture_on_commit_callbacks):
    run = start(project, people, django_capture_on_commit_callbacks)
    gone = verified_clips[3]
    os.remove(settings.MEDIA_ROOT / gone.file.name)
    assert tasks.train_run(run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert gone.name in run.error and "no such video file" in run.error
    assert str(settings.MEDIA_ROOT) not in run.error  # no server paths shown to managers
    assert "[worker] failed:" in run.log
    assert AuditEvent.objects.filter(action="training.failed", object_id=str(run.pk)).exists()


def test_an_unexpected_error_fails_the_run_with_one_line_and_the_traceback_in_the_log(
        project, people, verified_clips, worker, django_capture_on_commit_callbacks, monkeypatch):
    import ml.train

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of\nmemory")

    run = start(project, people, django_capture_on_commit_callbacks)
    monkeypatch.setattr(ml.train, "train", broken)
    assert tasks.train_run(run.pk) == "failed"
    run.refresh_from_db()
    assert run.error == "RuntimeError: CUDA out of memory"
    assert "Traceback (most recent call last)" in run.log


# --- watching -------------------------------------------------------------------------------------------

def test_watch_requeues_a_run_whose_worker_was_lost_then_gives_up(project, django_capture_on_commit_callbacks):
    stale = timezone.now() - training.STALE_AFTER - timedelta(minutes=1)
    run = TrainingRun.objects.create(project=project, status="running", attempts=1, heartbeat_at=stale,
                                     output_path=f"adapters/{project.slug}/run-x")
    fresh = TrainingRun.objects.create(project=project.__class__.objects.create(name="Other", slug="other"),
                                       status="running", attempts=1, heartbeat_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert tasks.train_watch() == {"requeued": [run.pk], "failed": [], "cancelled": [], "resent": []}
    assert len(sent) == 1  # the run task again, to resume from its checkpoint in the same folder
    run.refresh_from_db()
    assert run.status == "queued" and run.attempts == 1 and "queued again to resume" in run.log
    fresh.refresh_from_db()
    assert fresh.status == "running"

    # Lost again and again: after MAX_RESUMES resumes it fails.
    TrainingRun.objects.filter(pk=run.pk).update(status="running", attempts=training.MAX_RESUMES + 1,
                                                 heartbeat_at=stale)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert tasks.train_watch()["failed"] == [run.pk]
    assert not sent
    run.refresh_from_db()
    assert run.status == "failed" and "worker was lost" in run.error


def test_a_requeued_run_resumes_on_the_next_worker(project, people, verified_clips, worker,
                                                   django_capture_on_commit_callbacks, monkeypatch):
    """A worker died after step 1 (its checkpoint is on disk); watch queues the run again, and the next worker
    continues from that checkpoint rather than starting over."""
    import ml.train

    run = start(project, people, django_capture_on_commit_callbacks)
    real_train = ml.train.train

    def dies_after_step_one(*args, should_stop, **kwargs):
        return real_train(*args, should_stop=lambda: True, **kwargs)  # stop at step 1 with a checkpoint

    monkeypatch.setattr(ml.train, "train", dies_after_step_one)
    monkeypatch.setattr(training, "_finish", lambda *a, **k: False)  # ... and die without a word
    monkeypatch.setattr(training, "WRITE_EVERY_S", 0.0)  # step 1 reached the database before it died
    tasks.train_run(run.pk)
    monkeypatch.undo()
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - training.STALE_AFTER * 2)
    with django_capture_on_commit_callbacks(execute=False):
        assert tasks.train_watch()["requeued"] == [run.pk]

    steps = []
    monkeypatch.setattr(ml.train, "train", lambda *a, progress, **k: real_train(
        *a, progress=lambda p: (steps.append(p.step), progress(p)), **k))
    assert tasks.train_run(run.pk) == "succeeded"
    assert steps == [2, 3, 4]  # continued after the checkpoint at step 1
    run.refresh_from_db()
    assert run.attempts == 2 and [m["step"] for m in run.metrics] == [1, 2, 3, 4]


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_beats_while_training_and_notices_a_lost_run(project):
    import time

    run = TrainingRun.objects.create(project=project, status="running", attempts=1,
                                     heartbeat_at=timezone.now() - timedelta(hours=1))
    reporter = training._Reporter(run)
    with training._Heartbeat(reporter, every_s=0.05):
        time.sleep(0.3)  # a long evaluation: no progress callback, yet the heartbeat moves
        run.refresh_from_db()
        assert timezone.now() - run.heartbeat_at < timedelta(seconds=5) and not reporter.lost
        # watch handed the run to another worker (attempt 2): the next beat finds it is no longer ours.
        TrainingRun.objects.filter(pk=run.pk).update(attempts=2)
        deadline = time.monotonic() + 5
        while not reporter.lost and time.monotonic() < deadline:
            time.sleep(0.05)
    assert reporter.lost
