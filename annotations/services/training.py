"""LoRA training runs of InternVL: start, cancel, run (on a `train` worker) and watch.

A run is a TrainingRun row: the web side creates it (`start_run`: a frozen snapshot, the effective
`config.training`, dispatched on commit) and may ask it to stop (`cancel`); a training worker runs it
(`execute`, through the task `affectloop.train.run`); beat watches it (`watch`, `affectloop.train.watch`).

Never run twice, by design:
- One queued-or-running run per project is a database rule (trainingrun_one_live_per_project).
- A worker takes a run by one conditional UPDATE from queued to running, which also counts the start in
  `attempts`. A redelivered or duplicate message finds the run running (or finished) and leaves it alone.
- The task acknowledges its message on receipt (acks_late=False): a broker never hands a long run to a second
  worker because the first one is slow. A lost worker is found by its stale heartbeat instead: `watch` puts
  the run back to queued (at most MAX_RESUMES times) and the next worker resumes it from its last checkpoint
  in the same output folder (ml.train resumes there), or marks it failed.
- Every write a worker makes is conditional on (running, its own attempt number). A worker that watch gave
  up on (it was only slow) finds that it no longer owns the run at its next heartbeat and stops at once.

The run keeps its state in the database: progress, the step metrics (loss, lr, evaluations), a bounded log
tail and a heartbeat, written at most every WRITE_EVERY_S seconds (plus at every evaluation).

Output: the adapter in <MODEL_DIR>/adapters/<project slug>/run-<id>-<random>/ (ml.train's layout, with its resumable
checkpoints), the JSONL it was trained on in <MODEL_DIR>/training/<project slug>/run-<id>-<random>/, and on success a
candidate ModelVersion of the adapter (registry.register_model) with its lineage.

Torch-free at import: ml.train is imported inside `execute`, which only training workers call.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
import traceback
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .. import dispatch
from ..models import DatasetSnapshot, ModelVersion, Project, TrainingRun
from ..project_config import ConfigError as ProjectConfigError
from ..project_config import parse, project_config
from . import audit, evaluation, registry, snapshots

log = logging.getLogger(__name__)

# A run's own time limit is config.training.max_hours (default MAX_HOURS), checked between steps by
# _Reporter.should_stop on each start of the worker: past it the run stops at a checkpoint and fails. The Celery
# limits of the task are fixed when it is declared (tasks.py), so they are only a backstop at the key's upper
# bound (MAX_HOURS_LIMIT).
MAX_HOURS = 12
MAX_HOURS_LIMIT = 168
TIME_LIMIT_S = MAX_HOURS_LIMIT * 3600
WRITE_EVERY_S = 2.0  # at most one progress write (and one cancel check) per this many seconds
STALE_AFTER = timedelta(minutes=20)  # a running run whose heartbeat is older lost its worker
HEARTBEAT_EVERY_S = 60.0  # the heartbeat thread's beat while ml.train runs (_Heartbeat)
QUEUED_RESEND_AFTER = timedelta(hours=1)  # a queued run's message may have been lost: send it again
MAX_RESUMES = 3  # a lost worker's run is resumed this many times, then failed
LOG_MAX_CHARS = 64_000  # TrainingRun.log keeps the tail
LIVE = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)

# config.training keys that ml.train's TrainConfig shares (same names, same meaning).
TRAIN_KEYS = ("num_frames", "lora_rank", "lora_alpha", "lora_dropout", "learning_rate", "schedule", "epochs",
              "batch_size", "grad_accum", "seed", "precision", "caption_ratio")
# Frozen into the snapshot: a run cannot change them.
NOT_OVERRIDABLE = ("split", "group_key")


class TrainingError(ValueError):
    """Bad input to start or cancel a run (a wrong override, a live run already, nothing to train on): safe
    to show."""


# --- web side -------------------------------------------------------------------------------------------
def effective_training(project: Project, overrides: dict | None = None) -> dict:
    """The project's `config.training` with `overrides` on top, validated by the project config schema
    (errors name the key's full path), as plain JSON."""
    if overrides is not None and not isinstance(overrides, dict):
        raise TrainingError("overrides must be an object of config.training keys")
    overrides = dict(overrides or {})
    frozen = sorted(set(overrides) & set(NOT_OVERRIDABLE))
    if frozen:
        raise TrainingError(f"config.training.{frozen[0]} cannot be overridden for one run (the snapshot "
                            f"fixes the split)")
    raw = dict(project.config or {})
    raw["training"] = {**(raw.get("training") or {}), **overrides}
    try:
        parsed = parse(raw)
    except ProjectConfigError as exc:
        raise TrainingError(f"Invalid training settings: {exc}") from None
    return dataclasses.asdict(parsed.training)


def start_run(project: Project, *, actor, snapshot: DatasetSnapshot | None = None,
              overrides: dict | None = None) -> TrainingRun:
    """Queue a training run on `snapshot` (None: freeze everything verified now) with the project's training
    settings plus `overrides`. Refused while another run of the project is queued or running."""
    training = effective_training(project, overrides)
    if TrainingRun.objects.filter(project=project, status__in=LIVE).exists():
        raise TrainingError("A training run of this project is already queued or running.")
    if snapshot is None:
        try:
            snapshot = snapshots.freeze(project, actor=actor)
        except snapshots.SnapshotError as exc:
            raise TrainingError(str(exc)) from None
    elif snapshot.project_id != project.pk:
        raise TrainingError("That snapshot belongs to another project.")
    counts = snapshot.split_counts or {}
    if not counts.get("train") or not counts.get("val"):
        raise TrainingError(f"Snapshot {snapshot.name} needs clips in both the train and the validation split "
                            f"(it has {counts.get('train', 0)} and {counts.get('val', 0)}).")
    parent = registry.active_versions(project).get("internvl")
    config = {"training": training, "overrides": dict(overrides or {})}
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(project=project, snapshot=snapshot, base_model=parent, config=config,
                                             created_by=actor if getattr(actor, "pk", None) else None)
            run.output_path = output_folder(run)
            run.save(update_fields=["output_path"])
            audit.record("training.started", run, actor=actor, project=project,
                         changes={"snapshot": snapshot.name, "content_hash": snapshot.content_hash,
                                  "overrides": config["overrides"], "parent": parent.name if parent else None})
            dispatch.train_run(run.pk)
    except IntegrityError:  # trainingrun_one_live_per_project: a concurrent start won
        raise TrainingError("A training run of this project is already queued or running.") from None
    return run


def cancel(run: TrainingRun, *, actor) -> TrainingRun:
    """Stop a run: a queued one (no worker holds it) is cancelled now; a running one is asked to stop, and
    the worker marks it cancelled after saving a checkpoint (it stays live until then)."""
    now = timezone.now()
    with transaction.atomic():
        if TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
                status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=now):
            audit.record("training.cancelled", run, actor=actor, project=run.project, changes={"was": "queued"})
        elif TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(cancel_requested=True):
            audit.record("training.cancel_requested", run, actor=actor, project=run.project, changes={})
        else:
            run.refresh_from_db()
            raise TrainingError(f"Training run {run.pk} has already ended ({run.status}).")
    run.refresh_from_db()
    return run


def output_folder(run: TrainingRun) -> str:
    """The adapter folder of a new run, relative to the model directory. A random suffix: a database restored
    from a backup (or a test's rolled-back one) reuses run ids, and a new run must never resume another's
    checkpoints."""
    return f"adapters/{run.project.slug}/run-{run.pk}-{secrets.token_hex(4)}"


# --- beat -----------------------------------------------------------------------------------------------
def watch(now=None) -> dict:
    """Find runs whose worker was lost (a running run with a stale heartbeat): queue them again to resume
    from their last checkpoint, at most MAX_RESUMES times, else fail them. A queued run waiting longer than
    QUEUED_RESEND_AFTER has its message sent again (a duplicate is harmless: only one worker takes it)."""
    now = now or timezone.now()
    outcome = {"requeued": [], "failed": [], "cancelled": [], "resent": []}
    stale = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    for run in stale.select_related("project"):
        with transaction.atomic():
            mine = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING, attempts=run.attempts)
            if run.cancel_requested:  # its worker died before it could stop: nothing left to stop
                if mine.update(status=TrainingRun.Status.CANCELLED, finished_at=now):
                    audit.record("training.cancelled", run, project=run.project, changes={"was": "lost"})
                    outcome["cancelled"].append(run.pk)
            elif run.attempts > MAX_RESUMES:
                message = (f"The worker was lost {run.attempts} times (no heartbeat for "
                           f"{int(STALE_AFTER.total_seconds() // 60)} minutes); giving up.")
                if mine.update(status=TrainingRun.Status.FAILED, error=message, finished_at=now):
                    audit.record("training.failed", run, project=run.project, changes={"error": message})
                    outcome["failed"].append(run.pk)
            elif mine.update(status=TrainingRun.Status.QUEUED, heartbeat_at=now,
                             log=_tail(run.log + f"[watch] no heartbeat since {run.heartbeat_at:%Y-%m-%d %H:%M:%S}"
                                                 f" UTC: queued again to resume (start {run.attempts + 1})\n")):
                audit.record("training.requeued", run, project=run.project, changes={"attempts": run.attempts})
                dispatch.train_run(run.pk)
                outcome["requeued"].append(run.pk)
    waiting = TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED)
    for run in waiting:
        since = run.heartbeat_at or run.created_at
        if since < now - QUEUED_RESEND_AFTER and TrainingRun.objects.filter(
                pk=run.pk, status=TrainingRun.Status.QUEUED, heartbeat_at=run.heartbeat_at).update(heartbeat_at=now):
            dispatch.train_run(run.pk)
            outcome["resent"].append(run.pk)
    return outcome


# --- worker side ----------------------------------------------------------------------------------------
def _tail(text: str) -> str:
    return text[-LOG_MAX_CHARS:]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _safe(message: str) -> str:
    """No server paths in what managers see."""
    return message.replace(str(settings.MEDIA_ROOT), "<media>").replace(str(settings.MODEL_DIR), "<models>")


def _claim(run_id: int) -> TrainingRun | None:
    """Take a queued run (queued → running, one more attempt); None when it is not queued."""
    now = timezone.now()
    with transaction.atomic():
        taken = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED,
                                           cancel_requested=False).update(
            status=TrainingRun.Status.RUNNING, attempts=F("attempts") + 1, heartbeat_at=now, error="")
        if not taken:
            return None
        run = TrainingRun.objects.select_related("project", "snapshot", "base_model").get(pk=run_id)
        if run.started_at is None:
            TrainingRun.objects.filter(pk=run_id).update(started_at=now)
            run.started_at = now
    return run


def base_model_ref(run: TrainingRun) -> tuple[str, ModelVersion | None]:
    """The InternVL base to fine-tune, as a model reference, and the version the candidate descends from:
    config.training.base_model, else the base of the active InternVL version, else the configured
    pre-labeling InternVL model."""
    ref = run.config.get("training", {}).get("base_model")
    parent = run.base_model
    if ref:
        return ref, parent
    if parent is not None:
        return parent.base_model, parent
    spec = project_config(run.project).prelabel.backends.internvl
    if spec is None:
        raise registry.RegistryError("no base model: set config.training.base_model or an InternVL "
                                     "pre-labeling model")
    return spec.model, parent


class _Reporter:
    """The progress and should_stop callbacks: state in memory, written to the run at most every
    WRITE_EVERY_S seconds (and at every evaluation), each write also a heartbeat and an ownership check."""

    def __init__(self, run: TrainingRun) -> None:
        self.run, self.attempt = run, run.attempts
        self.metrics = list(run.metrics or [])
        self.log = run.log
        self.progress = run.progress
        self.last_write = 0.0
        self.cancel = False
        self.lost = False  # watch gave the run to another worker
        self.max_hours = max_hours(run)
        self.started = time.monotonic()
        self.timed_out = False  # ran past config.training.max_hours

    def line(self, text: str) -> None:
        self.log = _tail(self.log + text.rstrip("\n") + "\n")

    def mine(self):
        return TrainingRun.objects.filter(pk=self.run.pk, status=TrainingRun.Status.RUNNING, attempts=self.attempt)

    def flush(self) -> None:
        self.last_write = time.monotonic()
        if not self.mine().update(metrics=self.metrics, log=self.log, progress=self.progress,
                                  heartbeat_at=timezone.now()):
            self.lost = True
            return
        self.cancel = TrainingRun.objects.filter(pk=self.run.pk, cancel_requested=True).exists()

    def due(self) -> bool:
        return time.monotonic() - self.last_write >= WRITE_EVERY_S

    def __call__(self, progress) -> None:
        from ml.train import format_progress  # worker-only module (the caller already imported it)

        entry = {"step": progress.step, "epoch": progress.epoch, "loss": progress.loss, "lr": progress.lr,
                 "time": round(progress.elapsed_s, 3)}
        if progress.eval is not None:
            entry["eval"] = {k: v for k, v in progress.eval.items() if k not in ("step", "epoch")}
        # Resumed runs report steps again from their checkpoint: keep one entry per step.
        self.metrics = [m for m in self.metrics if m.get("step", 0) < progress.step] + [entry]
        self.progress = min(1.0, progress.step / progress.total_steps) if progress.total_steps else 0.0
        self.line(format_progress(progress))
        if progress.eval is not None or self.due():
            self.flush()

    def should_stop(self) -> bool:
        if self.due():
            self.flush()
        if time.monotonic() - self.started > self.max_hours * 3600:
            self.timed_out = True
        return self.cancel or self.lost or self.timed_out


class _Heartbeat:
    """Beats for the run from a thread while `ml.train` works: between steps the reporter writes the heartbeat,
    but one evaluation (generation over the whole validation split) or one step of a large model can outlast
    STALE_AFTER, and watch would then hand a healthy run to another worker. A beat that finds the run no
    longer ours marks the reporter lost, so training stops at its next step."""

    def __init__(self, reporter: _Reporter, every_s: float) -> None:
        import threading

        self.reporter, self.every_s = reporter, every_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{reporter.run.pk}", daemon=True)

    def _beat(self) -> None:
        from django.db import connection

        try:
            while not self.stopped.wait(self.every_s):
                if not self.reporter.mine().update(heartbeat_at=timezone.now()):
                    self.reporter.lost = True
                    return
        except Exception:  # a beat that fails must not kill training; the reporter's writes still beat
            log.exception("training run %s: heartbeat thread failed", self.reporter.run.pk)
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def max_hours(run: TrainingRun) -> float:
    """The run's time limit in hours: config.training.max_hours as the run was started (runs started before
    the key existed: MAX_HOURS)."""
    value = ((run.config or {}).get("training") or {}).get("max_hours")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
        else float(MAX_HOURS)


def _finish(reporter: _Reporter, status: str, **fields) -> bool:
    """The run's final state, if this worker still owns it."""
    done = reporter.mine().update(status=status, metrics=reporter.metrics, log=reporter.log,
                                  progress=reporter.progress, heartbeat_at=timezone.now(),
                                  finished_at=timezone.now(), **fields)
    return bool(done)


def train_config(run: TrainingRun, base_path: str):
    """The ml.train settings of a run: its config.training keys, this worker's options
    (settings.TRAINING_WORKER_OPTIONS, e.g. num_workers) and the resolved base. Fixed at the first start and
    reused on resume (ml.train refuses to resume with other settings)."""
    from ml.training.config import TrainConfig  # standard library only

    stored = run.config.get("train_config")
    if stored:
        return TrainConfig.from_dict(stored)
    training = run.config.get("training", {})
    values = {key: training[key] for key in TRAIN_KEYS if training.get(key) is not None}
    values.update(getattr(settings, "TRAINING_WORKER_OPTIONS", {}) or {})
    values["base_model"] = base_path
    init = parent_adapter(run)
    if init:
        values["init_adapter"] = registry.resolve(init)
    return TrainConfig.from_dict(values, source="config.training")


def parent_adapter(run: TrainingRun) -> str | None:
    """The adapter a run continues from (config.training.continue_from_parent): its parent's, relative to
    the model directory; None for a fresh LoRA, also when the parent is a bare base model (nothing learnt
    to continue). Continuing on another base than the parent's is refused: the adapter's weights belong to
    the layers of the base it was trained on."""
    parent = run.base_model
    if not run.config.get("training", {}).get("continue_from_parent") or parent is None or not parent.adapter_path:
        return None
    ref = run.config.get("training", {}).get("base_model")
    if ref and ref != parent.base_model:
        raise registry.RegistryError(f"cannot continue {parent.name}: it was trained on {parent.base_model}, "
                                     f"and config.training.base_model is {ref}")
    if (parent.metrics or {}).get("files_removed_at"):
        raise registry.RegistryError(f"cannot continue {parent.name}: its adapter files were removed")
    return parent.adapter_path


def execute(run_id: int) -> str:
    """Run a queued training run to its end on this worker; the run's final status, or "skipped" when it
    was not queued (taken by another worker, finished, cancelled, or gone)."""
    run = _claim(run_id)
    if run is None:
        return "skipped"
    reporter = _Reporter(run)
    reporter.line(f"[worker] start {run.attempts} of run {run.pk} on snapshot {run.snapshot.name}")
    reporter.flush()
    try:
        return _execute(run, reporter)
    except Exception as exc:  # a failed run must say so; the traceback goes to the log
        log.exception("training run %s failed", run.pk)
        reporter.line(_safe(traceback.format_exc()))
        message = _safe(f"{type(exc).__name__}: {_one_line(exc)}")
        _finish(reporter, TrainingRun.Status.FAILED, error=message[:2000])
        return TrainingRun.Status.FAILED


def _execute(run: TrainingRun, reporter: _Reporter) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    # Worker-only: torch, transformers and peft come with ml.train; the web process never imports it.
    import ml.train as trainer
    from ml.training.checkpoints import ResumeError

    project = run.project
    out_rel = run.output_path or output_folder(run)
    out_dir = registry.models_dir() / out_rel
    data_dir = registry.models_dir() / "training" / Path(out_rel).relative_to("adapters")
    try:
        ref, parent = base_model_ref(run)
        config = train_config(run, registry.resolve(ref))
    except (registry.RegistryError, trainer.ConfigError) as exc:
        return _failed(reporter, str(exc))
    paths = snapshots.write_jsonl(run.snapshot, data_dir)
    captions_path, caption_info = None, {}
    if config.caption_ratio > 0:
        # Kept captions of clips outside the snapshot's val/test splits (services.captions). Written once per
        # run: a resumed run trains on the same file (ml.train checks the data hash).
        from . import captions

        captions_path = data_dir / captions.FILE_NAME
        if "captions" in (run.config or {}) and captions_path.exists():
            caption_info = run.config["captions"]
        else:
            captions_path, available = captions.write_jsonl(run.snapshot, data_dir)
            caption_info = {"available": available, "ratio": config.caption_ratio}
        if not caption_info.get("available"):
            return _failed(reporter, f"config.training.caption_ratio is {config.caption_ratio:g} but the project "
                                     f"has no kept captions outside the validation and test splits")
    saved = {**run.config, "train_config": config.to_dict(), "base_model_ref": ref,
             **({"captions": caption_info} if caption_info else {})}
    TrainingRun.objects.filter(pk=run.pk).update(output_path=out_rel, config=saved)
    run.config, run.output_path = saved, out_rel

    reporter.line(f"[worker] base {ref}; output {out_rel}")
    try:
        with _Heartbeat(reporter, HEARTBEAT_EVERY_S):
            metrics = trainer.train(config, paths["train"], paths["val"], out_dir, captions_path=captions_path,
                                    progress=reporter, should_stop=reporter.should_stop)
    except trainer.TrainingStopped as exc:
        reporter.line(f"[worker] stopped at step {exc.step}; checkpoint {Path(exc.checkpoint).name}")
        if reporter.lost:
            log.warning("training run %s: another worker took it over; stopped", run.pk)
            return "lost"
        if reporter.timed_out and not reporter.cancel:
            return _failed(reporter, f"ran past config.training.max_hours ({reporter.max_hours:g} h); the last "
                                     f"checkpoint is kept")
        if _finish(reporter, TrainingRun.Status.CANCELLED):
            audit.record("training.cancelled", run, project=project, changes={"step": exc.step})
        return TrainingRun.Status.CANCELLED
    except (trainer.TrainingDataError, trainer.ConfigError, ResumeError) as exc:
        return _failed(reporter, str(exc))
    except SoftTimeLimitExceeded:
        return _failed(reporter, f"ran past its time limit of {MAX_HOURS_LIMIT} h (the task's backstop; "
                                 f"config.training.max_hours is {reporter.max_hours:g} h)")

    try:
        version = register_candidate(run, ref, parent, out_rel, metrics)
    except registry.RegistryError as exc:
        return _failed(reporter, f"the adapter could not be registered: {exc}")
    # Score candidate, active and base on the snapshot's test split (services.evaluation); the figures go to
    # the candidate (metrics["evaluation"]) and to the run (eval_metrics["test"]), and the candidate's
    # lineage "eval" stays equal to the run's eval_metrics.
    reporter.line(f"[worker] evaluating {version.name} on the test split")
    reporter.flush()
    with _Heartbeat(reporter, HEARTBEAT_EVERY_S):  # three models over the test split: minutes on a GPU
        result = evaluation.evaluate_candidate(run, version)
    eval_metrics = {**metrics.get("eval", {}), "test": result}
    ModelVersion.objects.filter(pk=version.pk).update(metrics={**version.metrics, "eval": eval_metrics,
                                                               "evaluation": result})
    reporter.line(f"[worker] test split: {_summary(result)}")
    reporter.progress = 1.0
    reporter.line(f"[worker] done: candidate {version.name}")
    if _finish(reporter, TrainingRun.Status.SUCCEEDED, eval_metrics=eval_metrics):
        audit.record("training.succeeded", run, project=project,
                     changes={"model": version.name, "eval": metrics.get("eval", {})})
        if evaluation.promote_if_eligible(version, result):  # auto-promotion, once the run is recorded
            TrainingRun.objects.filter(pk=run.pk).update(eval_metrics=eval_metrics)  # "test" holds the outcome
    return TrainingRun.Status.SUCCEEDED


def _summary(result: dict) -> str:
    if result.get("error"):
        return f"evaluation failed: {result['error']}"
    if not result.get("n"):
        return "no test clips"
    models = ", ".join(f"{name} F {result[name]['f']:.3f}" for name in evaluation.MODELS if name in result)
    eligible = "eligible for auto-promotion" if result["promotion"]["eligible"] else "not auto-promoted"
    return f"n {result['n']}: {models}; {eligible}"


def _failed(reporter: _Reporter, message: str) -> str:
    message = _safe(" ".join(message.split()))
    reporter.line(f"[worker] failed: {message}")
    if _finish(reporter, TrainingRun.Status.FAILED, error=message[:2000]):
        audit.record("training.failed", reporter.run, project=reporter.run.project, changes={"error": message})
    return TrainingRun.Status.FAILED


def register_candidate(run: TrainingRun, base_ref: str, parent: ModelVersion | None, adapter: str,
                       metrics: dict) -> ModelVersion:
    """The trained adapter as a candidate InternVL version of the project, with its lineage in `metrics`:
    the snapshot, the run, the settings and the data hash ml.train recorded."""
    version = registry.register_model(run.project, "internvl", model=base_ref, adapter=adapter,
                                      training_run=run, parent=parent)
    lineage = {"eval": metrics.get("eval", {}), "best_step": metrics.get("best_step"),
               "steps": metrics.get("steps"), "data_hash": metrics.get("data_hash"),
               "samples": metrics.get("samples"), "snapshot": run.snapshot_id,
               "snapshot_hash": run.snapshot.content_hash, "training_run": run.pk,
               "config": run.config.get("train_config", {}), "parent": parent.name if parent else None,
               # Captions mixed in (ml.train: round(caption_ratio x labelled samples)); 0 without captions, so
               # runs with and without them compare in the registry.
               "captions": int((metrics.get("samples") or {}).get("captions") or 0),
               "caption_ratio": float(run.config.get("train_config", {}).get("caption_ratio") or 0.0),
               # Trained on from the parent's adapter rather than from a fresh LoRA.
               "continued_from": parent.name if parent and run.config.get("train_config", {}).get("init_adapter")
               else None}
    ModelVersion.objects.filter(pk=version.pk).update(metrics=lineage)
    version.refresh_from_db()
    return version


# --- retired adapters -------------------------------------------------------------------------------------
def kept_versions(project: Project) -> set[int]:
    """The versions whose files stay whatever their age: the active and candidate versions, the base of a
    live run, and every ancestor of those (the lineage a kept model was trained from)."""
    rows = dict(ModelVersion.objects.filter(project=project).values_list("pk", "parent_id"))
    roots = set(ModelVersion.objects.filter(project=project).exclude(status=ModelVersion.Status.RETIRED)
                .values_list("pk", flat=True))
    roots |= set(TrainingRun.objects.filter(project=project, status__in=LIVE, base_model__isnull=False)
                 .values_list("base_model_id", flat=True))
    kept: set[int] = set()
    for pk in roots:
        while pk is not None and pk not in kept:
            kept.add(pk)
            pk = rows.get(pk)
    return kept


def removable_adapters(project: Project, now=None) -> list[ModelVersion]:
    """Retired versions trained here (an adapter folder this service made) past config.training.
    keep_retired_days, outside every kept lineage, whose files are still there."""
    days = project_config(project).training.keep_retired_days
    if not days:
        return []
    cutoff = (now or timezone.now()) - timedelta(days=days)
    kept = kept_versions(project)
    candidates = (ModelVersion.objects.filter(project=project, status=ModelVersion.Status.RETIRED,
                                              retired_at__lt=cutoff, training_run__isnull=False,
                                              adapter_path__startswith=f"adapters/{project.slug}/run-")
                  .exclude(pk__in=kept).order_by("pk"))
    return [version for version in candidates if not (version.metrics or {}).get("files_removed_at")]


def clean_retired_adapters(now=None) -> dict[str, int]:
    """On a training worker (it has the model directory): remove the adapter folders (with their
    checkpoints) and training JSONL of long-retired versions, per project; the rows stay, with the removal
    recorded in metrics["files_removed_at"], so history and lineage still read. A removed version cannot be
    made active again (registry._activate)."""
    import shutil

    removed: dict[str, int] = {}
    root = registry.models_dir().resolve()
    for project in Project.objects.all():
        for version in removable_adapters(project, now):
            adapter = (root / version.adapter_path).resolve()
            data = (root / "training" / Path(version.adapter_path).relative_to("adapters")).resolve()
            for folder in (adapter, data):
                # Never outside the project's own folders, whatever a row says.
                if folder.is_relative_to(root / "adapters" / project.slug) or \
                        folder.is_relative_to(root / "training" / project.slug):
                    shutil.rmtree(folder, ignore_errors=True)
            stamp = timezone.now().isoformat()
            with transaction.atomic():
                ModelVersion.objects.filter(pk=version.pk).update(
                    metrics={**(version.metrics or {}), "files_removed_at": stamp})
                audit.record("model.files_removed", version, project=project,
                             changes={"adapter": version.adapter_path, "retired_at": version.retired_at.isoformat()})
            removed[project.slug] = removed.get(project.slug, 0) + 1
            log.info("removed the adapter files of retired %s (%s)", version.name, version.adapter_path)
    return removed
