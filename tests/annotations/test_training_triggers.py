"""Runs that start by themselves: config.training.trigger verified (enough new verified clips since the last
run) or schedule (a cron expression fired since the last run), through the beat task."""

from datetime import datetime, timedelta, timezone as tz

import pytest

from annotations import tasks
from annotations.models import Clip, TrainingRun
from annotations.services import annotating, queue, reviews, training_triggers
from annotations.services.projects import update_config
from tests.annotations import training_fixtures as shared

pytestmark = pytest.mark.django_db
people = shared.people


def verified(project, people, splits):
    """Clips verified through the services (no media needed: freezing reads the database only)."""
    clips = []
    for split in splits:
        key = shared.key_in(split)
        clip = Clip.objects.create(project=project, file=f"clips/{key[-8:]}.mp4", sha256=key, name=f"c-{key[-8:]}",
                                   size_bytes=1, status=Clip.Status.READY, duration=1.0)
        queue.claim(people["alice"], clip)
        draft = annotating.start(people["alice"], clip)
        done = annotating.submit(draft, labels=["calm"], base_version=draft.version)
        reviews.review(done, reviewer=people["rita"], decision="accept")
        clips.append(clip)
    return clips


def test_enough_new_verified_clips_start_a_run_once(project, people, django_capture_on_commit_callbacks):
    update_config(project, {"training": {"trigger": "verified", "min_new_verified": 4}})
    verified(project, people, ["train", "train", "val"])
    assert training_triggers.due(project) is None  # 3 of 4
    verified(project, people, ["train"])
    assert training_triggers.due(project) == "4 clips verified since the last run"
    with django_capture_on_commit_callbacks(execute=False) as sent:
        outcome = tasks.train_trigger()
    run = TrainingRun.objects.get(project=project)
    assert outcome == {project.slug: f"run {run.pk}: 4 clips verified since the last run"} and len(sent) == 1
    assert run.created_by is None and run.snapshot.clip_count == 4
    assert tasks.train_trigger() == {}  # a live run: nothing more
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    assert training_triggers.due(project) is None  # nothing verified since it started
    verified(project, people, ["train", "train", "train"])
    assert training_triggers.due(project) is None
    verified(project, people, ["val"])
    assert training_triggers.due(project) == "4 clips verified since the last run"


def test_a_manual_project_never_starts_by_itself(project, people):
    verified(project, people, ["train", "val"] * 3)
    assert training_triggers.due(project) is None and tasks.train_trigger() == {}


def test_a_due_project_that_cannot_train_says_why(project, people):
    update_config(project, {"training": {"trigger": "verified", "min_new_verified": 2}})
    verified(project, people, ["train", "train"])  # no validation clip
    outcome = tasks.train_trigger()
    assert "not started" in outcome[project.slug] and "validation" in outcome[project.slug]
    assert not TrainingRun.objects.exists()


def test_a_schedule_fires_once_per_firing(project, people):
    update_config(project, {"training": {"trigger": "schedule", "cron": "0 3 * * *"}})
    created = datetime(2026, 11, 20, 12, 0, tzinfo=tz.utc)
    assert not training_triggers.cron_fired("0 3 * * *", created, created + timedelta(hours=14))  # 02:00
    assert training_triggers.cron_fired("0 3 * * *", created, created + timedelta(hours=16))  # 04:00
    verified(project, people, ["train", "val"])
    run_time = datetime(2026, 11, 21, 3, 1, tzinfo=tz.utc)
    TrainingRun.objects.create(project=project, status="succeeded")
    TrainingRun.objects.filter(project=project).update(created_at=run_time)
    assert training_triggers.due(project, now=run_time + timedelta(hours=12)) is None
    assert training_triggers.due(project, now=run_time + timedelta(hours=24)) == "the schedule '0 3 * * *' fired"
