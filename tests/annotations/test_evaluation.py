"""services.evaluation: a finished run is scored on its snapshot's test split (candidate, active, base) with
bootstrap intervals, stored on the candidate and the run, and auto-promoted only when the rule holds.

The end-to-end test trains a tiny random InternVL on colour clips (the colour tells the emotion) until it has
learned, on the CPU, through the task a train worker runs. The promotion rule itself is unit-tested on
crafted figures (no training)."""

import copy

import pytest

from annotations import tasks
from annotations.models import AuditEvent, ModelVersion
from annotations.services import evaluation
from tests.annotations import training_fixtures as shared
from tests.conftest import reference_path, skip_without_ffmpeg

pytestmark = pytest.mark.django_db
model_dir, one_thread, people = shared.model_dir, shared.one_thread, shared.people  # the shared fixtures
start, verify_clips = shared.start, shared.verify_clips

# The colour task of tests/ml/test_train.py: 32 training clips, 80 steps of batch 8 at lr 5e-3, r 8, 4 frames.
TRAINING = {"base_model": "tiny56", "lora_rank": 8, "learning_rate": 5e-3, "batch_size": 8, "grad_accum": 1,
            "epochs": 20, "num_frames": 4}
# One evaluation (at the end) instead of one per epoch: the run's own val figures are not under test here.
worker = shared.worker_fixture({"num_workers": 0, "max_new_tokens": 12, "log_every": 10, "eval_every": 80})
SPLITS = ["train"] * 32 + ["val"] * 4 + ["test"] * 16


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory) -> list:
    skip_without_ffmpeg()
    from ml.testing.samples import generate_colour_clips

    return generate_colour_clips(tmp_path_factory.mktemp("colour"), len(SPLITS), seed=2)


# --- end to end -----------------------------------------------------------------------------------------

def test_a_finished_run_is_scored_on_its_test_split_and_promoted_when_it_clearly_wins(
        project, people, colour_videos, worker, settings, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setenv("AFFECTLOOP_WHEEL_DIR", str(reference_path("emotion_wheel")))
    # min_test_clips 16: the default (30) would take twice the clips.
    project.config = {"training": {**TRAINING, "auto_promote": True, "promote_margin": 0.2, "min_test_clips": 16}}
    project.save(update_fields=["config"])
    clips = verify_clips(project, people, colour_videos, SPLITS, settings.MEDIA_ROOT)
    active = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:tiny56+base",
                                         base_model="tiny56", status="active")
    run = start(project, people, django_capture_on_commit_callbacks)
    assert run.snapshot.split_counts == {"train": 32, "val": 4, "test": 16}

    assert tasks.train_run(run.pk) == "succeeded"
    run.refresh_from_db()
    candidate = ModelVersion.objects.get(training_run=run)
    result = candidate.metrics["evaluation"]

    # Scored on exactly the snapshot's test split: none of the clips it trained (or early-stopped) on.
    test_names = sorted(run.snapshot.items.filter(split="test").values_list("clip_name", flat=True))
    assert result["split"] == "test" and result["n"] == 16
    assert result["clips"] == test_names == sorted(c.name for c, s in zip(clips, SPLITS) if s == "test")
    assert not set(result["clips"]) & set(run.snapshot.items.exclude(split="test").values_list("clip_name", flat=True))
    assert [row["clip"] for row in result["per_clip"]] == test_names

    # Side by side, each with n and a 95% interval; the candidate learned, the base did not.
    assert result["models"]["candidate"]["adapter"] == run.output_path
    assert result["models"]["active"] == {"version": active.name, "base": "tiny56", "adapter": None}
    for name in ("candidate", "active", "base"):
        figures = result[name]
        assert figures["n"] == 16 and set(figures["ci"]) == {"precision", "recall", "f"}
        for key in ("precision", "recall", "f"):
            lo, hi = figures["ci"][key]
            assert lo <= figures[key] <= hi
        assert set(figures["vocabulary"]) == {"term", "family"}
        assert figures["wheel"]["n"] == 16 and "f" in figures["wheel"]["ci"]
    assert result["candidate"]["f"] >= 0.8, result["per_clip"]
    assert result["base"]["f"] <= 0.3 and result["active"]["f"] == result["base"]["f"]  # the same model
    assert result["reference"] == "active"
    gain = result["paired_gain"]
    assert gain["against"] == "active" and gain["mean"] == pytest.approx(result["candidate"]["f"] - result["active"]["f"])
    assert 0 < gain["ci"][0] <= gain["mean"] <= gain["ci"][1]

    # All three held: promoted through the registry (audited there), the reasons recorded.
    promotion = result["promotion"]
    assert promotion["eligible"] and promotion["promoted"], promotion["reasons"]
    assert promotion["checks"] == {"enough_test_clips": True, "margin_met": True, "gain_lower_bound_above_zero": True}
    assert promotion["reasons"][-1] == "all three held: promoted automatically"
    candidate.refresh_from_db()
    active.refresh_from_db()
    assert candidate.status == "active" and active.status == "retired"
    assert AuditEvent.objects.filter(action="model.promoted", object_id=str(candidate.pk)).exists()

    # The run carries the same result beside its own val figures.
    assert run.eval_metrics["test"] == result and "eval_loss" in run.eval_metrics
    assert candidate.metrics["eval"] == run.eval_metrics
    assert "test split: n 16" in run.log


# --- the rule, on crafted figures -----------------------------------------------------------------------

def _figures(n=40, candidate=0.80, active=0.60, lower=0.05):
    def model(f):
        return {"precision": f, "recall": f, "f": f, "n": n, "ci": {"f": [f - 0.1, f + 0.1]}}
    return {"split": "test", "n": n, "candidate": model(candidate), "active": model(active),
            "base": model(0.1), "reference": "active",
            "paired_gain": {"against": "active", "mean": candidate - active, "ci": [lower, candidate - active + 0.1]}}


def test_the_rule_promotes_when_all_three_hold():
    out = evaluation.decide(_figures(), auto_promote=True, margin=0.05)
    assert out["promote"] is True
    assert out["checks"] == {"enough_test_clips": True, "margin_met": True, "gain_lower_bound_above_zero": True}


@pytest.mark.parametrize("change,margin,failed,reason", [
    ({"n": 12}, 0.05, "enough_test_clips", "the test split has 12 clips, fewer than 30"),
    ({"candidate": 0.62}, 0.05, "margin_met", "gain +0.020 is below the margin 0.050"),
    ({"lower": 0.0}, 0.05, "gain_lower_bound_above_zero", "lower 95% bound of the gain is +0.000 (not above zero)"),
    ({"lower": -0.03}, 0.05, "gain_lower_bound_above_zero", "bound of the gain is -0.030 (not above zero)"),
])
def test_the_rule_refuses_naming_the_check_that_failed(change, margin, failed, reason):
    out = evaluation.decide(_figures(**change), auto_promote=True, margin=margin)
    assert out["promote"] is False
    assert [name for name, ok in out["checks"].items() if not ok] == [failed]
    assert any(reason in line for line in out["reasons"]), out["reasons"]


def test_the_rule_never_promotes_with_auto_promote_off_or_without_figures():
    off = evaluation.decide(_figures(), auto_promote=False, margin=0.05)
    assert off["promote"] is False and all(off["checks"].values())
    assert off["reasons"][0] == "config.training.auto_promote is off: a manager promotes"

    empty = evaluation.decide({"split": "test", "n": 0}, auto_promote=True, margin=0.0)
    assert empty["promote"] is False and "no figures to compare" in empty["reasons"][-1]
    failed = evaluation.decide({"n": 40, "error": "RuntimeError: boom"}, auto_promote=True, margin=0.0)
    assert failed["promote"] is False and failed["reasons"] == ["the evaluation failed: RuntimeError: boom"]

    no_active = _figures()
    del no_active["active"]
    no_active.update(reference="base", paired_gain={**no_active["paired_gain"], "against": "base"})
    out = evaluation.decide(copy.deepcopy(no_active), auto_promote=True, margin=0.05)
    assert out["promote"] is True and "vs base F 0.100" in out["reasons"][1]


def test_min_test_clips_can_be_given():
    assert evaluation.decide(_figures(n=12), auto_promote=True, margin=0.05, min_test_clips=10)["promote"]


def test_a_failed_evaluation_is_recorded_and_blocks_auto_promotion(project, monkeypatch):
    from annotations.models import TrainingRun

    project.config = {"training": {"auto_promote": True}}
    project.save(update_fields=["config"])
    run = TrainingRun.objects.create(project=project, status="succeeded")
    candidate = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:x+run",
                                            base_model="x", training_run=run, metrics={"steps": 4})

    def broken(*args):
        raise RuntimeError("out of\nmemory")

    monkeypatch.setattr(evaluation, "evaluate_run", broken)
    result = evaluation.evaluate_candidate(run, candidate)
    assert result["error"] == "RuntimeError: out of memory"
    assert result["promotion"]["eligible"] is False and result["promotion"]["promoted"] is False
    assert result["promotion"]["reasons"] == ["the evaluation failed: RuntimeError: out of memory"]
    assert evaluation.promote_if_eligible(candidate, result) is False
    candidate.refresh_from_db()
    assert candidate.metrics == {"steps": 4, "evaluation": result} and candidate.status == "candidate"


def test_the_wheel_part_is_skipped_without_a_configured_folder(monkeypatch, settings):
    monkeypatch.delenv("AFFECTLOOP_WHEEL_DIR", raising=False)
    assert evaluation.wheel_dir() is None
    settings.WHEEL_DIR = "/data/wheel"
    assert evaluation.wheel_dir() == "/data/wheel"


# --- config.training.max_hours: a run's own time limit (services.training) -----------------------------------

def test_a_run_past_max_hours_stops_at_a_checkpoint_and_fails_naming_the_key(
        project, people, colour_videos, worker, settings, monkeypatch, django_capture_on_commit_callbacks):
    """The Celery limits of the task are fixed when it is declared, so the worker checks the run's
    config.training.max_hours between steps (should_stop) and fails the run when it is past. The real run on
    the tiny model; only the clock (an external boundary) runs fast: every reading is 400 s after the last."""
    import time
    from itertools import count

    from annotations.models import TrainingRun
    from annotations.services import training

    assert training.max_hours(TrainingRun(config={})) == training.MAX_HOURS == 12  # runs from before the key
    assert training.TIME_LIMIT_S >= 168 * 3600  # the task's backstop never cuts a run short of its max_hours
    project.config = {"training": {**TRAINING, "epochs": 2, "max_hours": 0.1}}
    project.save(update_fields=["config"])
    verify_clips(project, people, colour_videos[:5], ["train"] * 4 + ["val"], settings.MEDIA_ROOT)
    run = start(project, people, django_capture_on_commit_callbacks)
    assert training.max_hours(run) == 0.1

    readings = count()

    class FastClock:  # 0.1 h is 360 s: past it at the first check after the run's start
        @staticmethod
        def monotonic():
            return time.monotonic() + 400 * next(readings)

    monkeypatch.setattr(training, "time", FastClock)
    assert tasks.train_run(run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "ran past config.training.max_hours (0.1 h); the last checkpoint is kept"
    assert "stopped at step 1" in run.log
    checkpoints = settings.MODEL_DIR / run.output_path / "checkpoints"
    assert any(p.name.startswith("step-") for p in checkpoints.iterdir())
    assert AuditEvent.objects.filter(action="training.failed", object_id=str(run.pk)).exists()


def test_the_reporter_asks_to_stop_once_past_max_hours(project):
    import time

    from annotations.models import TrainingRun
    from annotations.services import training

    run = TrainingRun.objects.create(project=project, status="running", attempts=1,
                                     config={"training": {"max_hours": 1}})
    reporter = training._Reporter(run)
    reporter.last_write = now = time.monotonic()  # no write due
    assert reporter.should_stop() is False and reporter.timed_out is False
    reporter.started = now - 3601
    assert reporter.should_stop() is True and reporter.timed_out is True
