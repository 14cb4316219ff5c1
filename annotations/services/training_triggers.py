"""When runs start by themselves (config.training.trigger): the beat job `affectloop.train.trigger`.

- `verified`: once at least `min_new_verified` clips were verified since the project's last run started
  (or ever, before the first run);
- `schedule`: once the 5-field `cron` expression (the beat's time zone) has fired since the last run started
  (or since the project was created).
A failed or cancelled run counts as the last run, so a run that keeps failing is retried on the next
threshold or firing, never in a loop. A project with a live run is left alone.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from ..models import Clip, Project, TrainingRun
from ..project_config import ConfigError, project_config
from . import training

log = logging.getLogger(__name__)


def cron_fired(expression: str, since, now) -> bool:
    """Whether the cron expression fired after `since`, up to `now` (both aware datetimes)."""
    from celery.schedules import crontab

    minute, hour, day_of_month, month, day_of_week = expression.split()
    schedule = crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                       day_of_week=day_of_week, nowfun=lambda: now)
    due, _ = schedule.is_due(since)
    return due


def due(project: Project, now=None) -> str | None:
    """Why a run should start now, or None."""
    now = now or timezone.now()
    try:
        config = project_config(project).training
    except ConfigError:
        return None
    if config.trigger == "manual" or TrainingRun.objects.filter(project=project, status__in=training.LIVE).exists():
        return None
    last = TrainingRun.objects.filter(project=project).order_by("-created_at").values_list("created_at",
                                                                                        flat=True).first()
    if config.trigger == "verified":
        new = project.clips.filter(label_state=Clip.LabelState.VERIFIED)
        if last is not None:
            new = new.filter(verified_at__gt=last)
        n = new.values("pk")[:config.min_new_verified].count()
        return f"{n} clips verified since the last run" if n >= config.min_new_verified else None
    if config.trigger == "schedule" and config.cron:
        if cron_fired(config.cron, last or project.created_at, now):
            return f"the schedule {config.cron!r} fired"
    return None


def start_due_runs(now=None) -> dict[str, str]:
    """Beat: start a run in every project whose trigger says so. slug → the run started, or why it could not."""
    started = {}
    for project in Project.objects.filter(archived=False):
        reason = due(project, now)
        if reason is None:
            continue
        try:
            run = training.start_run(project, actor=None)
        except training.TrainingError as exc:
            log.warning("training trigger for %s: %s; not started: %s", project.slug, reason, exc)
            started[project.slug] = f"not started: {exc}"
        else:
            log.info("training trigger for %s: %s; run %s queued", project.slug, reason, run.pk)
            started[project.slug] = f"run {run.pk}: {reason}"
    return started
