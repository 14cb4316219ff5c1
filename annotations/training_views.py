"""The managers' retraining pages: training runs (start, schedule, watch, cancel) and model versions (promote,
roll back, retire).

Thin: membership through selectors.project_for(..., Role.MANAGER) (404 for anyone else, and for another
project's run or version by id), every change through one service (services.training, services.registry,
services.projects.update_config), their errors shown as messages. Plots are server-side SVG (plots.py).
The run page's live part is a fragment that htmx fetches every 2 s while the run is queued or running; the
fragment of a finished run carries no trigger, so polling stops by itself.
"""

from __future__ import annotations

import copy
import math
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import plots, selectors
from .models import DatasetSnapshot, ModelVersion, Role, TrainingRun
from .project_config import ConfigError, project_config
from .services import projects, registry, training

LOG_TAIL_LINES = 200
EVAL_KEYS = ("f", "exact_match", "precision", "recall")
TRIGGER_HELP = {
    "manual": "Runs start only when a manager starts one here.",
    "verified": "A run starts by itself once this many clips were verified since the last run.",
    "schedule": "A run starts by itself at the times of the cron schedule (server time).",
}


# --- forms ------------------------------------------------------------------------------------------------
class StartRunForm(forms.Form):
    """What to train on, and optional per-run overrides of config.training (checked by the service)."""

    snapshot = forms.ChoiceField(label="Train on", required=False)
    epochs = forms.IntegerField(required=False)
    learning_rate = forms.FloatField(label="Learning rate", required=False)
    lora_rank = forms.IntegerField(label="LoRA rank", required=False)
    batch_size = forms.IntegerField(label="Batch size", required=False)
    seed = forms.IntegerField(required=False)
    start_from = forms.ChoiceField(label="Start from", required=False,
                                   choices=[("", "Project setting"), ("fresh", "A fresh LoRA"),
                                            ("parent", "The active version's adapter")])
    OVERRIDES = ("epochs", "learning_rate", "lora_rank", "batch_size", "seed")

    def __init__(self, *args, snapshots=(), defaults=None, **kwargs):
        super().__init__(*args, **kwargs)
        if defaults is not None:
            setting = "the active version's adapter" if defaults.continue_from_parent else "a fresh LoRA"
            self.fields["start_from"].choices = [("", f"Project setting ({setting})"),
                                                 *self.fields["start_from"].choices[1:]]
        self.fields["snapshot"].choices = [("", "Everything verified now (freezes a new snapshot)")] + [
            (str(s.pk), f"{s.name} · {s.clip_count} clips · {s.created_at:%Y-%m-%d %H:%M}") for s in snapshots]
        for name in self.OVERRIDES:
            widget = self.fields[name].widget
            widget.attrs["placeholder"] = "" if defaults is None else str(getattr(defaults, name))
            widget.attrs["step"] = "any"

    def overrides(self) -> dict:
        chosen = {k: self.cleaned_data[k] for k in self.OVERRIDES if self.cleaned_data.get(k) is not None}
        if self.cleaned_data.get("start_from"):
            chosen["continue_from_parent"] = self.cleaned_data["start_from"] == "parent"
        return chosen


class ScheduleForm(forms.Form):
    trigger = forms.ChoiceField(choices=[("manual", "manual"), ("verified", "when clips are verified"),
                                         ("schedule", "on a schedule")])
    min_new_verified = forms.IntegerField(label="New verified clips that start a run")
    cron = forms.CharField(label="Cron schedule", required=False, help_text="5 fields, e.g. 0 3 * * 1")


# --- reads --------------------------------------------------------------------------------------------------
def _run_for(project, run_id) -> TrainingRun:
    run = (TrainingRun.objects.select_related("snapshot", "created_by", "base_model")
           .filter(project=project, pk=run_id).first())
    if run is None:
        raise Http404("No such training run")
    return run


def duration(run: TrainingRun, now=None) -> timedelta | None:
    if run.started_at is None:
        return None
    return (run.finished_at or now or timezone.now()) - run.started_at


def format_duration(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def final_eval(run: TrainingRun) -> dict:
    """The run's final evaluation: eval_metrics when it finished, else its latest step evaluation."""
    if _dict(run.eval_metrics):
        return run.eval_metrics
    steps = run.metrics if isinstance(run.metrics, list) else []
    evals = [m["eval"] for m in steps if isinstance(m, dict) and isinstance(m.get("eval"), dict)]
    return evals[-1] if evals else {}


def run_row(run: TrainingRun, now=None) -> dict:
    """One run as the pages show it; `figures` are the final evaluation's plain numbers (nested results, e.g.
    the test-split comparison under "test", are left to their own view)."""
    counts = _dict(run.snapshot.split_counts if run.snapshot else None)
    found = final_eval(run)
    numbers = {k: v for k, v in found.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"run": run, "counts": counts, "duration": format_duration(duration(run, now)), "eval": found,
            "numbers": numbers}


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join((text or "").splitlines()[-lines:])


def run_figures(run: TrainingRun) -> list[plots.Figure]:
    """The loss per step (training loss, and evaluation loss where measured) and the evaluation metrics."""
    steps = [m for m in (run.metrics if isinstance(run.metrics, list) else [])
             if isinstance(m, dict) and isinstance(m.get("step"), (int, float))]
    evals = [(m["step"], m["eval"]) for m in steps if isinstance(m.get("eval"), dict)]
    loss = [plots.Series("training loss", [(m["step"], m.get("loss")) for m in steps])]
    if any("eval_loss" in e for _, e in evals):
        loss.append(plots.Series("evaluation loss", [(s, e.get("eval_loss")) for s, e in evals]))
    scores = [plots.Series(key.replace("_", " "), [(s, e.get(key)) for s, e in evals])
              for key in EVAL_KEYS if any(key in e for _, e in evals)]
    return [plots.figure(loss, title="Loss", x_label="step", y_label="loss", chart_id=f"run-{run.pk}-loss"),
            plots.figure(scores, title="Evaluation on the validation split", x_label="step", y_label="score",
                         chart_id=f"run-{run.pk}-eval", y_min=0, y_max=1)]


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


SCORE_NAMES = {"test_f": "test F", "f": "validation F", "exact_match": "validation exact match"}


def version_score(version: ModelVersion) -> tuple[str, float] | None:
    """(which, value): the version's F on the test split (metrics["evaluation"]["candidate"]["f"]) when it
    was evaluated, else its validation F, else its validation exact match; `which` is a SCORE_NAMES key."""
    metrics = _dict(version.metrics)
    test_f = _number(_dict(_dict(metrics.get("evaluation")).get("candidate")).get("f"))
    if test_f is not None and not _dict(metrics.get("evaluation")).get("error"):
        return "test_f", test_f
    found = _dict(metrics.get("eval"))
    for key in ("f", "exact_match"):
        if _number(found.get(key)) is not None:
            return key, float(found[key])
    return None


# --- the test-split evaluation (services.evaluation) -----------------------------------------------------------
EVAL_MODELS = ("candidate", "active", "base")
SCORE_KEYS = (("precision", "P"), ("recall", "R"), ("f", "F"))
CHECK_NAMES = {"enough_test_clips": "enough test clips", "margin_met": "F gain meets the margin",
               "gain_lower_bound_above_zero": "the gain's lower 95% bound is above zero"}


def _shown(value) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.3f}"


def _interval(value) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = _number(value[0]), _number(value[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _score_row(model: str, version, figures) -> dict | None:
    """One model's P, R, F as shown ("0.512", "0.401–0.620") with n; None without an F."""
    figures = _dict(figures)
    if _number(figures.get("f")) is None:
        return None
    ci = _dict(figures.get("ci"))
    cells = []
    for key, label in SCORE_KEYS:
        interval = _interval(ci.get(key))
        cells.append({"key": key, "label": label, "value": _shown(figures.get(key)),
                      "ci": f"{interval[0]:.3f}–{interval[1]:.3f}" if interval else ""})
    n = figures.get("n")
    return {"model": model, "version": version if isinstance(version, str) else "",
            "cells": cells, "n": n if _number(n) is not None else ""}


def evaluation_view(found, chart_id: str = "", plot: bool = False) -> dict | None:
    """The stored test-split evaluation (services.evaluation) as the pages show it: per level a table of the
    candidate, active and base (P, R, F with 95% intervals and n), the wheel's figures or why they were
    skipped, the paired gain, the promotion decision, or the error. Unknown or odd keys are ignored; None
    when there is nothing."""
    found = _dict(found)
    if not found:
        return None
    versions = _dict(found.get("models"))
    present = [m for m in EVAL_MODELS if isinstance(found.get(m), dict)]

    def table(pick) -> list[dict]:
        rows = [_score_row(m, _dict(versions.get(m)).get("version") or _dict(versions.get(m)).get("base"),
                           pick(_dict(found[m]))) for m in present]
        return [r for r in rows if r]

    levels = [{"name": "term", "title": "Term level", "rows": table(lambda f: f)},
              {"name": "family", "title": "Family level",
               "rows": table(lambda f: _dict(f.get("vocabulary")).get("family"))}]
    wheel_info = _dict(found.get("wheel"))
    wheel_rows = table(lambda f: f.get("wheel"))
    if wheel_rows:
        level = wheel_info.get("level")
        levels.append({"name": "wheel", "rows": wheel_rows,
                       "title": f"Emotion wheel (level {level})" if _number(level) is not None else "Emotion wheel"})
    skipped = wheel_info.get("skipped")
    gain = _dict(found.get("paired_gain"))
    gain_view = None
    if _number(gain.get("mean")) is not None:
        interval = _interval(gain.get("ci"))
        gain_view = {"against": str(gain.get("against") or found.get("reference") or ""),
                     "level": str(gain.get("level") or ""), "mean": f"{gain['mean']:+.3f}",
                     "ci": f"{interval[0]:+.3f} to {interval[1]:+.3f}" if interval else "",
                     "p_not_better": _shown(gain.get("p_not_better")), "n": gain.get("n", "")}
    promotion = _dict(found.get("promotion"))
    promotion_view = None
    if promotion:
        checks = _dict(promotion.get("checks"))
        promotion_view = {
            "auto_promote": promotion.get("auto_promote") is True, "eligible": promotion.get("eligible") is True,
            "promoted": promotion.get("promoted") is True, "margin": _shown(promotion.get("margin")),
            "min_test_clips": promotion.get("min_test_clips", ""),
            "checks": [(CHECK_NAMES.get(str(k), str(k)), v is True) for k, v in checks.items()],
            "reasons": [str(r) for r in promotion.get("reasons") or [] if isinstance(r, str)]}
    term = levels[0]["rows"]
    figure = None
    if plot and term:
        series = []
        for position, model in enumerate(present, start=1):
            figures = _dict(found[model])
            interval = _interval(_dict(figures.get("ci")).get("f"))
            points = [(position, figures["f"], "F")] if _number(figures.get("f")) is not None else []
            if interval:
                points = [(position, interval[0], "lower 95%"), *points, (position, interval[1], "upper 95%")]
            if points:
                series.append(plots.Series(model, points))
        figure = plots.figure(series, title="F on the test split, with 95% intervals",
                              x_label=" · ".join(f"{i} {m}" for i, m in enumerate(present, start=1)),
                              y_label="F (term level)", chart_id=chart_id or "evaluation", y_min=0, y_max=1)
    n = found.get("n")
    return {"n": n if _number(n) is not None else "", "split": str(found.get("split") or "test"),
            "error": str(found["error"]) if found.get("error") else "",
            "levels": [level for level in levels if level["rows"]],
            "wheel_skipped": str(skipped) if skipped and not wheel_rows else "",
            "reference": str(found.get("reference") or ""), "gain": gain_view, "promotion": promotion_view,
            "figure": figure}


# --- the runs page ------------------------------------------------------------------------------------------
def _runs_context(request, project, start_form=None, schedule_form=None) -> dict:
    config = project_config(project).training
    snapshots = list(DatasetSnapshot.objects.filter(project=project).order_by("-created_at")[:100])
    runs = list(TrainingRun.objects.filter(project=project).select_related("snapshot", "created_by")
                .order_by("-created_at")[:100])
    now = timezone.now()
    live = next((r for r in runs if r.status in training.LIVE), None)
    return {
        "project": project,
        "rows": [run_row(r, now) for r in runs],
        "live": live,
        "start_form": start_form or StartRunForm(snapshots=snapshots, defaults=config),
        "schedule_form": schedule_form or ScheduleForm(initial={
            "trigger": config.trigger, "min_new_verified": config.min_new_verified, "cron": config.cron}),
        "training": config,
        "trigger_help": TRIGGER_HELP,
    }


@login_required
@require_http_methods(["GET", "POST"])
def training_runs(request, slug):
    """The runs of a project; POST action=start queues a run, action=schedule sets the trigger."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    if request.method == "GET":
        return render(request, "annotations/training_runs.html", _runs_context(request, project))
    action = request.POST.get("action")
    if action == "start":
        return _start(request, project)
    if action == "schedule":
        return _schedule(request, project)
    messages.error(request, "Unknown action.")
    return redirect("annotations:training-runs", slug=project.slug)


def _start(request, project):
    snapshots = DatasetSnapshot.objects.filter(project=project).order_by("-created_at")
    form = StartRunForm(request.POST, snapshots=snapshots[:100], defaults=project_config(project).training)
    if not form.is_valid():
        messages.error(request, "The run was not started: check the settings below.")
        return render(request, "annotations/training_runs.html", _runs_context(request, project, start_form=form),
                      status=400)
    snapshot = None
    if form.cleaned_data["snapshot"]:
        snapshot = snapshots.filter(pk=form.cleaned_data["snapshot"]).first()
    try:
        run = training.start_run(project, actor=request.user, snapshot=snapshot, overrides=form.overrides())
    except training.TrainingError as exc:
        messages.error(request, str(exc))
        return redirect("annotations:training-runs", slug=project.slug)
    messages.success(request, f"Training run #{run.pk} queued on snapshot {run.snapshot.name}.")
    return redirect("annotations:training-run", slug=project.slug, run_id=run.pk)


def _schedule(request, project):
    form = ScheduleForm(request.POST)
    if form.is_valid():
        raw = copy.deepcopy(project.config or {})
        raw["training"] = {**(raw.get("training") or {}), "trigger": form.cleaned_data["trigger"],
                           "min_new_verified": form.cleaned_data["min_new_verified"],
                           "cron": form.cleaned_data["cron"].strip()}
        try:
            projects.update_config(project, raw, actor=request.user)
        except ConfigError as exc:
            for error in exc.errors:
                form.add_error(None, error)
        else:
            messages.success(request, f"Retraining trigger set to {form.cleaned_data['trigger']}.")
            return redirect("annotations:training-runs", slug=project.slug)
    return render(request, "annotations/training_runs.html", _runs_context(request, project, schedule_form=form),
                  status=400)


@login_required
@require_GET
@never_cache
def training_banner(request, slug):
    """The runs page's live banner (htmx polls it while a run is live; `after` names the run it showed)."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    live = TrainingRun.objects.filter(project=project, status__in=training.LIVE).first()
    ended = None
    if live is None and request.GET.get("after", "").isdecimal():
        ended = TrainingRun.objects.filter(project=project, pk=int(request.GET["after"])).first()
    return render(request, "annotations/_training_banner.html", {"project": project, "live": live, "ended": ended})


# --- one run --------------------------------------------------------------------------------------------------
def _run_context(project, run) -> dict:
    evaluation = evaluation_view(_dict(run.eval_metrics).get("test"), chart_id=f"run-{run.pk}-test", plot=True)
    return {"project": project, "run": run, "row": run_row(run), "figures": run_figures(run), "evaluation": evaluation,
            "log": log_tail(run.log), "is_live": run.status in training.LIVE,
            "overrides": (run.config or {}).get("overrides") or {}}


@login_required
@require_GET
def training_run(request, slug, run_id):
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    run = _run_for(project, run_id)
    return render(request, "annotations/training_run.html", _run_context(project, run))


@login_required
@require_GET
@never_cache
def training_run_live(request, slug, run_id):
    """The live part of the run page (status, progress, plots, log, error, cancel), for htmx to swap in."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    run = _run_for(project, run_id)
    return render(request, "annotations/_training_live.html", _run_context(project, run))


@login_required
@require_POST
def training_run_cancel(request, slug, run_id):
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    run = _run_for(project, run_id)
    try:
        run = training.cancel(run, actor=request.user)
    except training.TrainingError as exc:
        messages.error(request, str(exc))
    else:
        if run.status == TrainingRun.Status.CANCELLED:
            messages.success(request, f"Training run #{run.pk} cancelled.")
        else:
            messages.info(request, f"Training run #{run.pk} will stop after saving a checkpoint.")
    return redirect("annotations:training-run", slug=project.slug, run_id=run.pk)


# --- model versions -------------------------------------------------------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
def model_versions(request, slug):
    """Versions by backend with their lineage and metrics; POST action=promote|retire (version) or rollback
    (backend)."""
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    if request.method == "POST":
        return _model_action(request, project)
    versions = list(ModelVersion.objects.filter(project=project)
                    .select_related("parent", "training_run", "training_run__snapshot").order_by("created_at", "pk"))
    snapshot_ids = {_dict(v.metrics).get("snapshot") for v in versions} - {None}
    snapshot_names = dict(DatasetSnapshot.objects.filter(project=project, pk__in=[
        s for s in snapshot_ids if isinstance(s, int)]).values_list("pk", "name"))
    groups = []
    for backend, label in ModelVersion.Backend.choices:
        mine = [v for v in versions if v.backend == backend]
        if not mine:
            continue
        rows = []
        for v in reversed(mine):  # newest first
            snapshot = (v.training_run.snapshot if v.training_run and v.training_run.snapshot else None)
            snapshot_id = _dict(v.metrics).get("snapshot")
            rows.append({"version": v, "eval": _dict(_dict(v.metrics).get("eval")),
                         "evaluation": evaluation_view(_dict(v.metrics).get("evaluation")),
                         "snapshot_name": snapshot.name if snapshot else snapshot_names.get(
                             snapshot_id if isinstance(snapshot_id, int) else None),
                         "score": version_score(v),
                         "continued": bool(_dict(v.metrics).get("continued_from")),
                         "files_removed": bool(_dict(v.metrics).get("files_removed_at"))})
        can_roll_back = any(v.status == ModelVersion.Status.RETIRED and v.promoted_at for v in mine)
        groups.append({"backend": backend, "label": label, "rows": rows, "can_roll_back": can_roll_back})
    series = []
    for backend, label in ModelVersion.Backend.choices:
        points = []
        for v in versions:
            score = version_score(v)
            if v.backend == backend and score:
                points.append((v.created_at, score[1], f"{v.name} ({SCORE_NAMES[score[0]]})"))
        if points:
            series.append(plots.Series(label, points))
    figure = plots.figure(series, title="Score per version", x_label="registered",
                          y_label="F on the test split, else validation F (or exact match)", chart_id="versions",
                          y_min=0, y_max=1)
    return render(request, "annotations/models.html", {"project": project, "groups": groups, "figure": figure})


def _model_action(request, project):
    action = request.POST.get("action")
    try:
        if action == "rollback":
            backend = request.POST.get("backend", "")
            if backend not in ModelVersion.Backend.values:
                raise Http404("No such backend")
            version = registry.roll_back(project, backend, actor=request.user)
            messages.success(request, f"{backend}: rolled back to {version.name}.")
        elif action in ("promote", "retire"):
            version_id = request.POST.get("version", "")
            version = (ModelVersion.objects.filter(project=project, pk=version_id).first()
                       if version_id.isdecimal() and len(version_id) < 19 else None)
            if version is None:
                raise Http404("No such model version")
            if action == "promote":
                registry.promote(version, actor=request.user)
                messages.success(request, f"{version.name} is now the active {version.backend} model.")
            else:
                registry.retire(version, actor=request.user)
                messages.success(request, f"{version.name} retired.")
        else:
            messages.error(request, "Unknown action.")
    except registry.RegistryError as exc:
        messages.error(request, str(exc))
    return redirect("annotations:models", slug=project.slug)
