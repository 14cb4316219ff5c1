"""The managers' retraining pages (annotations/training_views.py) and the server-side plots (annotations/plots.py).

Runs and versions are made as rows (or started through services.training with the dispatch left uncommitted:
no worker runs them); training itself is tested in test_training_runs.py.
"""

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from django.urls import reverse
from django.utils import timezone

from annotations import plots
from annotations.models import Clip, DatasetSnapshot, ModelVersion, Role, TrainingRun
from annotations.services import annotating, queue, reviews
from annotations.services.projects import create_project, set_membership
from ml.splits import split_of

pytestmark = pytest.mark.django_db
HOSTILE = "<img src=x onerror=alert(1)>"
SVG = "{http://www.w3.org/2000/svg}"
_keys = count(1)


# --- the cast -------------------------------------------------------------------------------------------------
def make_snapshot(project, name="snap-1", train=8, val=2, test=1) -> DatasetSnapshot:
    return DatasetSnapshot.objects.create(project=project, name=name, content_hash=f"{next(_keys):064x}",
                                          clip_count=train + val + test,
                                          split_counts={"train": train, "val": val, "test": test})


def make_run(project, status=TrainingRun.Status.SUCCEEDED, **fields) -> TrainingRun:
    now = timezone.now()
    defaults = {"snapshot": make_snapshot(project, name=f"snap-{next(_keys)}"), "started_at": now - timedelta(minutes=5)}
    if status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
        defaults.update(finished_at=now, progress=1.0)
    defaults.update(fields)
    return TrainingRun.objects.create(project=project, status=status, **defaults)


def make_version(project, name, status=ModelVersion.Status.CANDIDATE, **fields) -> ModelVersion:
    return ModelVersion.objects.create(project=project, backend=fields.pop("backend", "internvl"), name=name,
                                       base_model="tiny56", status=status, **fields)


def url(name, project, *args):
    return reverse(f"annotations:{name}", args=[project.slug, *args])


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def reviewer(project, django_user_model):
    user = django_user_model.objects.create_user("rita", password="pw-rita-12345")
    set_membership(project=project, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def verified(project, annotator, reviewer):
    """Ten verified clips, eight in the train split and two in validation."""
    for index in range(10):
        wanted = "train" if index < 8 else "val"
        while True:
            key = f"{next(_keys):064x}"
            if split_of(key, 0.8, 0.1, 0.1) == wanted:
                break
        clip = Clip.objects.create(project=project, file=f"clips/{index}.mp4", sha256=key, name=f"clip-{index}",
                                   size_bytes=1, status=Clip.Status.READY, duration=1.0)
        queue.claim(annotator, clip)
        draft = annotating.start(annotator, clip)
        annotation = annotating.submit(draft, labels=["calm"], base_version=draft.version)
        reviews.review(annotation, reviewer=reviewer, decision="accept")


@pytest.fixture
def mclient(client, manager):
    client.force_login(manager)
    return client


# --- access ---------------------------------------------------------------------------------------------------
def test_only_the_projects_managers_get_in(client, project, annotator, outsider, django_user_model):
    run = make_run(project)
    version = make_version(project, "internvl:a")
    pages = [url("training-runs", project), url("training-banner", project), url("training-run", project, run.pk),
             url("training-run-live", project, run.pk), url("models", project)]
    for user in (annotator, outsider):
        client.force_login(user)
        for page in pages:
            assert client.get(page).status_code == 404, (user, page)
        assert client.post(url("training-run-cancel", project, run.pk)).status_code == 404
        assert client.post(url("models", project), {"action": "retire", "version": version.pk}).status_code == 404
        assert client.post(url("training-runs", project), {"action": "start"}).status_code == 404
    # A manager of another project cannot reach this project's run or version through their own project.
    other_manager = django_user_model.objects.create_user("olga", password="pw-olga-12345")
    other = create_project(name="Other", creator=other_manager)
    client.force_login(other_manager)
    assert client.get(url("training-run", other, run.pk)).status_code == 404
    assert client.get(url("training-run-live", other, run.pk)).status_code == 404
    assert client.post(url("training-run-cancel", other, run.pk)).status_code == 404
    assert client.post(url("models", other), {"action": "retire", "version": version.pk}).status_code == 404
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.CANDIDATE
    assert client.get(url("training-runs", other)).status_code == 200


def test_every_form_carries_a_csrf_token(mclient, project):
    make_version(project, "internvl:a")
    run = make_run(project, status=TrainingRun.Status.RUNNING, progress=0.3)
    for page in (url("training-runs", project), url("models", project), url("training-run", project, run.pk)):
        html = mclient.get(page).content.decode()
        assert html.count("<form") == html.count("csrfmiddlewaretoken") > 0, page


def test_the_project_page_links_managers_to_training_and_models(mclient, project):
    html = mclient.get(reverse("annotations:project-detail", args=[project.slug])).content.decode()
    assert url("training-runs", project) in html and url("models", project) in html


# --- the runs page ----------------------------------------------------------------------------------------------
def test_the_list_shows_each_runs_facts(mclient, project, manager):
    run = make_run(project, created_by=manager, eval_metrics={"f": 0.6123, "exact_match": 0.5, "eval_loss": 1.2})
    response = mclient.get(url("training-runs", project))
    html = response.content.decode()
    row = response.context["rows"][0]
    assert row["run"] == run and row["counts"] == {"train": 8, "val": 2, "test": 1}
    assert row["duration"].startswith("5 min")
    assert "0.612" in html and "0.500" in html and run.snapshot.name in html and "maria" in html


def test_start_a_run_on_a_snapshot_with_overrides(mclient, project, django_capture_on_commit_callbacks):
    snapshot = make_snapshot(project)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = mclient.post(url("training-runs", project), {
            "action": "start", "snapshot": snapshot.pk, "epochs": "2", "learning_rate": "0.005", "lora_rank": "8",
            "batch_size": "4", "seed": "7"})
    run = TrainingRun.objects.get(project=project)
    assert response.status_code == 302 and response["Location"] == url("training-run", project, run.pk)
    assert len(sent) == 1  # dispatched to a training worker on commit
    assert run.snapshot == snapshot and run.status == TrainingRun.Status.QUEUED
    assert run.config["overrides"] == {"epochs": 2, "learning_rate": 0.005, "lora_rank": 8, "batch_size": 4, "seed": 7}
    assert run.config["training"]["epochs"] == 2


def test_start_a_run_on_everything_verified_now(mclient, project, verified, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = mclient.post(url("training-runs", project), {"action": "start", "snapshot": ""}, follow=True)
    run = TrainingRun.objects.get(project=project)
    assert run.config["overrides"] == {} and run.snapshot.clip_count == 10
    assert f"Training run #{run.pk} queued on snapshot {run.snapshot.name}." in page_messages(response)
    assert response.redirect_chain[-1][0] == url("training-run", project, run.pk)


def test_a_bad_override_is_a_message_and_starts_nothing(mclient, project):
    snapshot = make_snapshot(project)
    response = mclient.post(url("training-runs", project), {"action": "start", "snapshot": snapshot.pk,
                                                            "epochs": "0"}, follow=True)
    assert not TrainingRun.objects.exists()
    assert any("config.training.epochs must be an integer 1..100" in m for m in page_messages(response))
    response = mclient.post(url("training-runs", project), {"action": "start", "learning_rate": "fast"})
    assert response.status_code == 400 and "Enter a number." in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_a_second_live_run_and_nothing_verified_are_refused_as_messages(mclient, project):
    response = mclient.post(url("training-runs", project), {"action": "start", "snapshot": ""}, follow=True)
    assert any("nothing to freeze" in m for m in page_messages(response))
    make_run(project, status=TrainingRun.Status.RUNNING)
    response = mclient.post(url("training-runs", project), {"action": "start", "snapshot": make_snapshot(project).pk},
                            follow=True)
    assert "A training run of this project is already queued or running." in page_messages(response)


def test_the_live_banner_polls_while_a_run_is_live_and_stops_after(mclient, project):
    run = make_run(project, status=TrainingRun.Status.RUNNING, progress=0.42)
    html = mclient.get(url("training-runs", project)).content.decode()
    assert 'id="training-banner"' in html and 'hx-trigger="every 2s"' in html and "42%" in html
    assert "htmx" in html  # the page loads htmx (our static file, no inline script)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED, finished_at=timezone.now())
    fragment = mclient.get(url("training-banner", project), {"after": run.pk}).content.decode()
    assert "hx-trigger" not in fragment and f"Run #{run.pk} has ended" in fragment


# --- the schedule ------------------------------------------------------------------------------------------------
def test_the_schedule_form_sets_the_trigger(mclient, project):
    project.config = {"training": {"epochs": 5}}
    project.save(update_fields=["config"])
    response = mclient.post(url("training-runs", project), {"action": "schedule", "trigger": "verified",
                                                            "min_new_verified": "50", "cron": ""}, follow=True)
    project.refresh_from_db()
    assert project.config["training"] == {"epochs": 5, "trigger": "verified", "min_new_verified": 50, "cron": ""}
    assert "Retraining trigger set to verified." in page_messages(response)
    html = response.content.decode()
    assert "after 50 new verified clips" in html


@pytest.mark.parametrize("data, error", [
    ({"trigger": "schedule", "min_new_verified": "50", "cron": ""},
     "config.training.cron is required when config.training.trigger is schedule"),
    ({"trigger": "schedule", "min_new_verified": "50", "cron": "every night"},
     "config.training.cron must be a 5-field cron expression or empty"),
    ({"trigger": "verified", "min_new_verified": "0", "cron": ""},
     "config.training.min_new_verified must be an integer 1..1000000"),
    ({"trigger": "sometimes", "min_new_verified": "5", "cron": ""}, "Select a valid choice."),
])
def test_an_invalid_schedule_is_shown_and_not_saved(mclient, project, data, error):
    response = mclient.post(url("training-runs", project), {"action": "schedule", **data})
    assert response.status_code == 400 and error in response.content.decode()
    project.refresh_from_db()
    assert "training" not in (project.config or {})


# --- one run ---------------------------------------------------------------------------------------------------
def test_the_run_page_shows_progress_plots_and_an_escaped_log_tail(mclient, project):
    metrics = [{"step": s, "epoch": s / 4, "loss": 3.0 / s, "lr": 0.001} for s in range(1, 9)]
    metrics[3]["eval"] = {"eval_loss": 1.5, "exact_match": 0.25, "f": 0.4, "precision": 0.5, "recall": 0.3}
    metrics[7]["eval"] = {"eval_loss": 1.1, "exact_match": 0.5, "f": 0.7, "precision": 0.8, "recall": 0.6}
    log = "".join(f"line {i}\n" for i in range(500)) + f"step 8 {HOSTILE}\n"
    run = make_run(project, status=TrainingRun.Status.RUNNING, progress=0.5, metrics=metrics, log=log,
                   error=f"boom {HOSTILE}")
    html = mclient.get(url("training-run", project, run.pk)).content.decode()
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "line 499" in html and "line 100\n" not in html  # the tail only
    assert '<progress max="100" value="50"' in html
    assert html.count("<svg") == 2 and "training loss" in html and "exact match" in html
    assert "<details" in html  # the numbers under each plot


def test_the_live_fragment_polls_until_the_run_ends(mclient, project):
    run = make_run(project, status=TrainingRun.Status.QUEUED)
    live = url("training-run-live", project, run.pk)
    fragment = mclient.get(live).content.decode()
    assert 'hx-trigger="every 2s"' in fragment and f'hx-get="{live}"' in fragment
    assert "Cancel run" in fragment and "<html" not in fragment
    assert mclient.get(live)["Cache-Control"].startswith("max-age=0")
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.RUNNING, progress=0.75)
    assert 'hx-trigger="every 2s"' in mclient.get(live).content.decode()
    for status in ("succeeded", "failed", "cancelled"):
        TrainingRun.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now())
        fragment = mclient.get(live).content.decode()
        assert "hx-trigger" not in fragment and "hx-get" not in fragment and "Cancel run" not in fragment, status
        assert f'data-status="{status}"' in fragment


def test_cancel_a_queued_run_and_ask_a_running_one_to_stop(mclient, project):
    queued = make_run(project, status=TrainingRun.Status.QUEUED)
    response = mclient.post(url("training-run-cancel", project, queued.pk), follow=True)
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.CANCELLED
    assert f"Training run #{queued.pk} cancelled." in page_messages(response)
    running = make_run(project, status=TrainingRun.Status.RUNNING)
    response = mclient.post(url("training-run-cancel", project, running.pk), follow=True)
    running.refresh_from_db()
    assert running.status == TrainingRun.Status.RUNNING and running.cancel_requested
    assert "Stopping" in response.content.decode()
    response = mclient.post(url("training-run-cancel", project, queued.pk), follow=True)
    assert any("has already ended (cancelled)" in m for m in page_messages(response))
    assert mclient.get(url("training-run-cancel", project, queued.pk)).status_code == 405


def test_cancel_needs_the_csrf_token(client, project, manager):
    from django.test import Client

    run = make_run(project, status=TrainingRun.Status.QUEUED)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(manager)
    assert strict.post(url("training-run-cancel", project, run.pk)).status_code == 403
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED


# --- models ----------------------------------------------------------------------------------------------------
def test_promote_roll_back_and_retire_through_the_page(mclient, project):
    now = timezone.now()
    old = make_version(project, "internvl:base", status=ModelVersion.Status.ACTIVE, promoted_at=now)
    run = make_run(project)
    new = make_version(project, "internvl:base+run1", parent=old, training_run=run,
                       metrics={"eval": {"f": 0.7, "exact_match": 0.5}, "snapshot": run.snapshot_id})
    html = mclient.get(url("models", project)).content.decode()
    assert "Promote" in html and f'href="#version-{old.pk}"' in html and f"run #{run.pk}" in html
    assert run.snapshot.name in html and "Roll back" not in html

    response = mclient.post(url("models", project), {"action": "promote", "version": new.pk}, follow=True)
    assert "internvl:base+run1 is now the active internvl model." in page_messages(response)
    old.refresh_from_db(), new.refresh_from_db()
    assert (old.status, new.status) == ("retired", "active")

    response = mclient.post(url("models", project), {"action": "rollback", "backend": "internvl"}, follow=True)
    assert "internvl: rolled back to internvl:base." in page_messages(response)
    old.refresh_from_db(), new.refresh_from_db()
    assert (old.status, new.status) == ("active", "retired")

    response = mclient.post(url("models", project), {"action": "retire", "version": old.pk}, follow=True)
    assert "internvl:base retired." in page_messages(response)
    response = mclient.post(url("models", project), {"action": "retire", "version": old.pk}, follow=True)
    assert "internvl:base is already retired" in page_messages(response)
    response = mclient.post(url("models", project), {"action": "rollback", "backend": "affectgpt"}, follow=True)
    assert "affectgpt: no earlier active version to roll back to" in page_messages(response)
    assert mclient.post(url("models", project), {"action": "promote", "version": "999999"}).status_code == 404


def test_any_earlier_version_can_be_made_active_again(mclient, project):
    now = timezone.now()
    first = make_version(project, "internvl:first", status=ModelVersion.Status.RETIRED, promoted_at=now,
                         retired_at=now)
    make_version(project, "internvl:second", status=ModelVersion.Status.RETIRED, promoted_at=now, retired_at=now)
    current = make_version(project, "internvl:third", status=ModelVersion.Status.ACTIVE, promoted_at=now)
    html = mclient.get(url("models", project)).content.decode()
    assert html.count("Make active again") == 2  # both retired versions, not the active one
    mclient.post(url("models", project), {"action": "promote", "version": first.pk})
    first.refresh_from_db(), current.refresh_from_db()
    assert (first.status, current.status) == ("active", "retired")  # past the one right before it


def test_the_models_plot_shows_f_or_exact_match_per_version(mclient, project):
    make_version(project, "internvl:a", metrics={"eval": {"f": 0.4, "exact_match": 0.2}})
    make_version(project, "internvl:b", metrics={"eval": {"exact_match": 0.3}})
    make_version(project, "affectgpt:c", backend="affectgpt", status=ModelVersion.Status.ACTIVE)
    response = mclient.get(url("models", project))
    figure = response.context["figure"]
    assert [(r[0], r[1], r[3]) for r in figure.rows] == [("InternVL", "internvl:a (validation F)", "0.4"),
                                                         ("InternVL", "internvl:b (validation exact match)", "0.3")]
    html = response.content.decode()
    assert html.count("<svg") == 1 and "affectgpt:c" in html and "backend-affectgpt" in html


def test_hostile_model_names_and_metrics_are_escaped(mclient, project):
    run = make_run(project, eval_metrics={HOSTILE: 0.5, "f": 0.5, "test": {"n": 3, HOSTILE: {"f": 0.1}}})
    make_version(project, f"internvl:{HOSTILE}", training_run=run,
                 metrics={"eval": {"f": 0.5, HOSTILE: 1}, "snapshot": HOSTILE})
    for page in (url("models", project), url("training-run", project, run.pk)):
        html = mclient.get(page).content.decode()
        assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html, page


def test_odd_stored_metrics_do_not_break_the_pages(mclient, project):
    run = make_run(project, metrics=[{"step": "x"}, 3, {"step": 2, "loss": None, "eval": []}], eval_metrics=[])
    make_version(project, "internvl:odd", training_run=run, metrics=["not", "a", "dict"])
    make_version(project, "internvl:odd2", metrics={"eval": "none", "snapshot": "x"})
    for page in (url("models", project), url("training-run", project, run.pk), url("training-runs", project),
                 url("training-run-live", project, run.pk)):
        assert mclient.get(page).status_code == 200, page


# --- plots.py --------------------------------------------------------------------------------------------------
def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_a_line_chart_is_well_formed_svg_with_its_points():
    svg = plots.line_chart([plots.Series("loss", [(1, 2.0), (2, 1.5), (3, 1.0)]),
                            plots.Series("eval", [(2, 1.7), (3, None)])],
                           title="Loss", x_label="step", y_label="loss", chart_id="c1")
    root = parse(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img" and root.get("aria-labelledby") == "c1-title c1-desc"
    assert root.find(f"{SVG}title").text == "Loss"
    assert "3 points" not in root.find(f"{SVG}desc").text and "4 points in 2 series" in root.find(f"{SVG}desc").text
    circles = root.findall(f".//{SVG}circle")
    assert [(float(c.get("data-x")), float(c.get("data-y"))) for c in circles] == [(1, 2.0), (2, 1.5), (3, 1.0), (2, 1.7)]
    assert len(root.findall(f".//{SVG}polyline")) == 1  # one point draws no line
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "step" in texts and "loss" in texts and "Loss" in texts
    # No script, no external reference, no style element: presentation attributes only.
    tags = {el.tag.replace(SVG, "") for el in root.iter()}
    assert tags <= {"svg", "title", "desc", "rect", "text", "line", "g", "polyline", "circle"}
    assert not any(k.startswith("on") or "href" in k for el in root.iter() for k in el.attrib)


def test_points_map_inside_the_plot_area_and_higher_is_up():
    root = parse(plots.line_chart([plots.Series("s", [(0, 0.0), (10, 1.0)])], title="t", x_label="x", y_label="y"))
    (a, b) = root.findall(f".//{SVG}circle")
    assert float(a.get("cx")) < float(b.get("cx")) and float(a.get("cy")) > float(b.get("cy"))
    for c in (a, b):
        assert plots.MARGIN_LEFT <= float(c.get("cx")) <= plots.WIDTH - plots.MARGIN_RIGHT
        assert plots.MARGIN_TOP <= float(c.get("cy")) <= plots.HEIGHT - plots.MARGIN_BOTTOM


def test_every_text_is_escaped():
    svg = plots.line_chart([plots.Series(HOSTILE, [(1, 1.0, HOSTILE)])], title=f"T {HOSTILE} & </svg>",
                           x_label=HOSTILE, y_label='"quoted"', chart_id='x" onload="alert(1)')
    assert HOSTILE not in svg and "<img" not in svg and "</svg>" not in svg[:-6]
    root = parse(svg)
    assert root.find(f"{SVG}title").text == f"T {HOSTILE} & </svg>"
    assert all(not k.startswith("on") for el in root.iter() for k in el.attrib)
    assert root.find(f".//{SVG}g").get("data-series") == HOSTILE


def test_an_empty_chart_says_so():
    root = parse(plots.line_chart([plots.Series("s", [])], title="Nothing", x_label="x", y_label="y"))
    assert "No data yet" in [t.text for t in root.iter(f"{SVG}text")] and not root.findall(f".//{SVG}circle")
    figure = plots.figure([], title="Nothing", x_label="x", y_label="y")
    assert figure.empty and figure.rows == []


def test_dates_on_the_x_axis_and_the_table_rows():
    first = datetime(2026, 1, 1, 12, tzinfo=UTC)
    series = [plots.Series("InternVL", [(first, 0.4, "v1"), (first + timedelta(days=10), 0.6, "v2")])]
    figure = plots.figure(series, title="F", x_label="registered", y_label="F", y_min=0, y_max=1)
    root = parse(figure.svg)
    assert "2026-01-01" in [t.text for t in root.iter(f"{SVG}text")]
    assert figure.rows == [("InternVL", "v1", "2026-01-01 12:00 UTC", "0.4"),
                           ("InternVL", "v2", "2026-01-11 12:00 UTC", "0.6")]
    one = parse(plots.line_chart([plots.Series("s", [(first, 0.5)])], title="t", x_label="x", y_label="y"))
    assert len(one.findall(f".//{SVG}circle")) == 1


def test_nice_ticks_cover_the_range_with_round_steps():
    assert plots.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = plots.nice_ticks(0.37, 4.2)
    assert ticks[0] <= 0.37 and ticks[-1] >= 4.2 and len(ticks) <= 8
    assert plots.nice_ticks(3, 3)[0] < 3 < plots.nice_ticks(3, 3)[-1]


# --- the test-split evaluation ----------------------------------------------------------------------------------
def _scores(f, n=40, wheel=None):
    out = {"precision": f + 0.05, "recall": f - 0.05, "f": f, "n": n,
           "ci": {"precision": [f, f + 0.1], "recall": [f - 0.1, f], "f": [f - 0.05, f + 0.05]},
           "vocabulary": {"term": {}, "family": {"precision": 0.9, "recall": 0.8, "f": 0.85, "n": n,
                                                 "ci": {"precision": [0.8, 0.95], "recall": [0.7, 0.9],
                                                        "f": [0.75, 0.9]}}}}
    if wheel is not None:
        out["wheel"] = {"precision": wheel, "recall": wheel, "f": wheel, "n": n,
                        "ci": {"precision": [0.1, 0.2], "recall": [0.1, 0.2], "f": [0.11, 0.22]}}
    return out


def crafted_evaluation(wheel=True, **changes):
    evaluation = {
        "split": "test", "n": 40, "clips": [f"c{i}" for i in range(40)], "level": "term",
        "models": {"candidate": {"version": "internvl:tiny56+run-1", "base": "tiny56", "adapter": "adapters/x"},
                   "active": {"version": "internvl:tiny56+base", "base": "tiny56", "adapter": None},
                   "base": {"version": None, "base": "tiny56", "adapter": None}},
        "wheel": {"level": 1} if wheel else {"skipped": "no emotion-wheel folder configured (settings.WHEEL_DIR "
                                                        "or AFFECTLOOP_WHEEL_DIR; the project config has no such key)"},
        "candidate": _scores(0.612, wheel=0.5 if wheel else None),
        "active": _scores(0.401, wheel=0.3 if wheel else None),
        "base": _scores(0.333, wheel=0.25 if wheel else None),
        "reference": "active",
        "paired_gain": {"against": "active", "level": "term", "mean": 0.211, "ci": [0.1, 0.3], "p_not_better": 0.001,
                        "n": 40},
        "promotion": {"auto_promote": True, "margin": 0.05, "min_test_clips": 30, "eligible": True, "promoted": True,
                      "checks": {"enough_test_clips": True, "margin_met": True, "gain_lower_bound_above_zero": True},
                      "reasons": ["the test split has 40 clips, at least 30",
                                  "candidate F 0.612 vs active F 0.401: gain +0.211 meets the margin 0.050",
                                  "all three held: promoted automatically"]},
    }
    evaluation.update(changes)
    return evaluation


def test_the_run_page_shows_the_test_split_evaluation_with_intervals_gain_and_promotion(mclient, project):
    run = make_run(project, eval_metrics={"f": 0.5, "test": crafted_evaluation()})
    response = mclient.get(url("training-run", project, run.pk))
    html = response.content.decode()
    assert "Test-split evaluation" in html and "40 clips" in html
    view = response.context["evaluation"]
    assert [level["name"] for level in view["levels"]] == ["term", "family", "wheel"]
    term = view["levels"][0]["rows"]
    assert [r["model"] for r in term] == ["candidate", "active", "base"]
    assert term[0]["version"] == "internvl:tiny56+run-1" and term[0]["n"] == 40
    assert [(c["label"], c["value"], c["ci"]) for c in term[0]["cells"]] == [
        ("P", "0.662", "0.612–0.712"), ("R", "0.562", "0.512–0.612"), ("F", "0.612", "0.562–0.662")]
    assert "0.612–0.712" in html and "Family level" in html and "0.850" in html and "Emotion wheel (level 1)" in html
    assert "0.110–0.220" in html and "skipped" not in html
    assert "Paired gain of the candidate over active (term level F): <strong>+0.211</strong>" in html
    assert "95% interval +0.100 to +0.300" in html
    assert "promoted automatically" in html and "the test split has 40 clips, at least 30" in html
    assert "the gain&#x27;s lower 95% bound is above zero" in html
    # The F comparison as a chart with whiskers, and its numbers as a table.
    svg = parse(view["figure"].svg)
    assert svg.find(f"{SVG}title").text == "F on the test split, with 95% intervals"
    assert {(r[0], r[1], r[3]) for r in view["figure"].rows} >= {("candidate", "F", "0.612"),
                                                                ("candidate", "lower 95%", "0.562"),
                                                                ("base", "upper 95%", "0.383")}
    assert html.count("<svg") == 3  # loss, validation metrics, test-split F
    # The live fragment carries it too.
    assert "Test-split evaluation" in mclient.get(url("training-run-live", project, run.pk)).content.decode()


def test_a_skipped_wheel_says_why_and_a_failed_evaluation_shows_its_error(mclient, project):
    run = make_run(project, eval_metrics={"test": crafted_evaluation(wheel=False)})
    html = mclient.get(url("training-run", project, run.pk)).content.decode()
    assert "Emotion-wheel figures skipped: no emotion-wheel folder configured" in html
    assert "Emotion wheel (level" not in html and "Family level" in html

    failed = {"split": "test", "n": 0, "error": f"RuntimeError: out of memory {HOSTILE}",
              "promotion": {"auto_promote": True, "margin": 0.01, "min_test_clips": 30, "eligible": False,
                            "promoted": False, "checks": {},
                            "reasons": [f"the evaluation failed: RuntimeError: out of memory {HOSTILE}"]}}
    run = make_run(project, eval_metrics={"test": failed})
    html = mclient.get(url("training-run", project, run.pk)).content.decode()
    assert "The evaluation failed:</strong> RuntimeError: out of memory &lt;img" in html
    assert HOSTILE not in html and "not promoted automatically" in html
    assert "Term level" not in html and "Paired gain" not in html


def test_the_run_page_without_a_test_evaluation_shows_none(mclient, project):
    run = make_run(project, eval_metrics={"f": 0.5})
    response = mclient.get(url("training-run", project, run.pk))
    assert response.context["evaluation"] is None and "Test-split evaluation" not in response.content.decode()


def test_hostile_evaluation_figures_are_escaped(mclient, project):
    evaluation = crafted_evaluation(wheel=False, reference=HOSTILE)
    evaluation["models"]["candidate"]["version"] = HOSTILE
    evaluation["wheel"]["skipped"] = HOSTILE
    evaluation["paired_gain"]["against"] = HOSTILE
    evaluation["promotion"]["reasons"] = [HOSTILE]
    evaluation["promotion"]["checks"] = {HOSTILE: False}
    run = make_run(project, eval_metrics={"test": evaluation})
    make_version(project, "internvl:h", training_run=run, metrics={"evaluation": evaluation})
    for page in (url("training-run", project, run.pk), url("models", project)):
        html = mclient.get(page).content.decode()
        assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html, page


def test_the_models_page_shows_each_versions_test_evaluation(mclient, project):
    make_version(project, "internvl:a", metrics={"eval": {"f": 0.4}, "evaluation": crafted_evaluation(wheel=False)})
    make_version(project, "internvl:b", metrics={"eval": {"f": 0.3}})
    html = mclient.get(url("models", project)).content.decode()
    assert html.count('class="version-evaluation"') == 1 and "Test-split evaluation of internvl:a" in html
    assert "0.612 <span class=\"muted small\">(0.562–0.662)</span>" in html
    assert "Emotion-wheel figures skipped" in html and "promoted automatically" in html
    assert html.count("<svg") == 1  # the versions plot only


def test_the_models_plot_prefers_the_test_split_f_and_says_which(mclient, project):
    make_version(project, "internvl:a", metrics={"eval": {"f": 0.4}, "evaluation": crafted_evaluation()})
    make_version(project, "internvl:b", metrics={"eval": {"f": 0.3}})
    make_version(project, "internvl:c", metrics={"eval": {"f": 0.2},
                                                 "evaluation": {"split": "test", "n": 0, "error": "boom"}})
    response = mclient.get(url("models", project))
    figure = response.context["figure"]
    assert [(r[1], r[3]) for r in figure.rows] == [("internvl:a (test F)", "0.612"), ("internvl:b (validation F)", "0.3"),
                                                   ("internvl:c (validation F)", "0.2")]
    assert "test split" in figure.y_label
    assert "evaluation failed" in response.content.decode()
