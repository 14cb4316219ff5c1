"""The project dashboard (services.dashboard, dashboard_views): progress, throughput and drift checked against
hand-computed values on a small fixture, the stored figures and their beat task, and the page's access and
escaping. Agreement and model quality have their own tests (test_quality.py), gold accuracy test_gold.py."""

from datetime import datetime, timedelta, timezone as tz

import pytest
from django.urls import reverse
from django.utils import timezone

from annotations.models import Annotation, Clip, DashboardFigures, EmotionTerm, Prediction, Role
from annotations.services import dashboard
from annotations.services.projects import set_membership

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=tz.utc)


def clip(project, n, **fields):
    return Clip.objects.create(project=project, file=f"clips/{n}.mp4", original_name=f"{n}.mp4", name=f"c{n}",
                               sha256=f"{n:064x}", size_bytes=1, **fields)


def submitted(clip_, user, words, *, at, lead=60.0):
    return Annotation.objects.create(clip=clip_, annotator=user, status=Annotation.Status.SUBMITTED,
                                     labels=[{"term": w, "source": "human"} for w in words], submitted_at=at,
                                     lead_time=lead)


@pytest.fixture
def bob(django_user_model, project):
    user = django_user_model.objects.create_user("bob", password="pw-bob-12345")
    set_membership(project=project, user=user, role=Role.ANNOTATOR)
    return user


def test_progress_is_cumulative_per_day_by_stage(project, annotator, bob):
    day1, day2, day3 = NOW - timedelta(days=2), NOW - timedelta(days=1), NOW
    a = clip(project, 1, status="ready", duration=1.0, ready_at=day1, verified_at=day3, label_state="verified")
    b = clip(project, 2, status="ready", duration=1.0, ready_at=day1)
    c = clip(project, 3, status="ready", duration=1.0, ready_at=day2)
    for x, at in ((a, day1), (b, day2)):
        p = Prediction.objects.create(clip=x, backend="fused", model_version="fused:1", labels=[])
        Prediction.objects.filter(pk=p.pk).update(created_at=at)
    # a second, later fused prediction of clip a is not a second pre-labelled clip
    p = Prediction.objects.create(clip=a, backend="fused", model_version="fused:2", labels=[])
    Prediction.objects.filter(pk=p.pk).update(created_at=day3)
    submitted(a, annotator, ["happy"], at=day2)
    submitted(a, bob, ["happy"], at=day3)  # the same clip again: counted on its first submission only
    submitted(c, bob, ["sad"], at=day3)

    series = dashboard.progress(project)["series"]
    days = [d.date().isoformat() for d in (day1, day2, day3)]
    assert series["ready"][:3] == [[days[0], 2], [days[1], 3], [days[2], 3]]
    assert series["pre-labelled"][:3] == [[days[0], 1], [days[1], 2], [days[2], 2]]
    assert series["submitted"][:3] == [[days[0], 0], [days[1], 1], [days[2], 2]]
    assert series["verified"][:3] == [[days[0], 0], [days[1], 0], [days[2], 1]]


def test_progress_of_an_empty_project_has_empty_series(project):
    assert dashboard.progress(project) == {"series": {"ready": [], "pre-labelled": [], "submitted": [],
                                                      "verified": []}}


def test_throughput_per_annotator_over_active_hours(project, annotator, bob):
    clips = [clip(project, i) for i in range(1, 6)]
    # alice: 3 clips, 60 + 120 + 180 s = 6 min active -> 3 / 0.1 h = 30 clips/h, median 120 s
    for x, lead in zip(clips[:3], (60, 120, 180), strict=True):
        submitted(x, annotator, ["happy"], at=NOW - timedelta(days=1), lead=lead)
    # bob: one clip in the window (90 s -> 40 clips/h), one 40 days ago (outside the 30 days)
    submitted(clips[3], bob, ["sad"], at=NOW - timedelta(days=2), lead=90)
    submitted(clips[4], bob, ["sad"], at=NOW - timedelta(days=40), lead=10)
    # a draft is not work done
    Annotation.objects.create(clip=clips[4], annotator=annotator, labels=[], lead_time=500)

    rows = {r["username"]: r for r in dashboard.throughput(project, now=NOW)["annotators"]}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["submitted"] == 3 and rows["alice"]["clips_per_hour"] == pytest.approx(30.0)
    assert rows["alice"]["median_lead_s"] == 120
    assert rows["bob"]["submitted"] == 1 and rows["bob"]["clips_per_hour"] == pytest.approx(40.0)
    assert rows["bob"]["active_hours"] == pytest.approx(0.025)


def test_drift_counts_new_entries_per_week_and_the_biggest_movers(project, annotator):
    # seed terms never count as new; a proposed term counts in the week it was proposed
    proposed = EmotionTerm.objects.create(project=project, term="hangry", kind="term", family="anger",
                                          valence="negative", source="human")
    EmotionTerm.objects.filter(pk=proposed.pk).update(created_at=NOW - timedelta(days=3))
    clips = [clip(project, i) for i in range(1, 7)]
    # before (29..56 days ago): happy, happy, sad -> happy 2/3, sad 1/3
    for x, words in zip(clips[:3], (["happy"], ["happy"], ["sad"]), strict=True):
        submitted(x, annotator, words, at=NOW - timedelta(days=40))
    # now (last 28 days): sad, sad, happy + sad -> labels happy 1, sad 3: happy 1/4, sad 3/4
    for x, words in zip(clips[3:], (["sad"], ["sad"], ["happy", "sad"]), strict=True):
        submitted(x, annotator, words, at=NOW - timedelta(days=5))

    result = dashboard.drift(project, now=NOW)
    human = dict(result["new_per_week"]["human"])
    assert sum(human.values()) == 1 and "seed" not in result["new_per_week"]
    week = (NOW - timedelta(days=3)).date()
    assert human[(week - timedelta(days=week.weekday())).isoformat()] == 1
    movers = {m["term"]: m for m in result["movers"]}
    # happy: 66.67% -> 25% = -41.67 points; sad: 33.33% -> 75% = +41.67 points
    assert movers["happy"]["change"] == pytest.approx(-41.67, abs=0.01)
    assert movers["sad"]["change"] == pytest.approx(41.67, abs=0.01)
    assert result["labels"] == {"before": 3, "after": 4}


def test_synonyms_move_together_in_drift(project, annotator):
    from annotations.services.vocabulary import project_vocabulary

    assert project_vocabulary(project).canonical("glad") == "happy"  # the seed vocabulary's synonym
    c1, c2 = clip(project, 1), clip(project, 2)
    submitted(c1, annotator, ["glad"], at=NOW - timedelta(days=40))
    submitted(c2, annotator, ["HAPPY"], at=NOW - timedelta(days=2))
    movers = dashboard.drift(project, now=NOW)["movers"]
    assert [m["term"] for m in movers] == ["happy"] and movers[0]["change"] == 0


def test_refresh_stores_one_row_and_the_page_reads_it(client, project, manager, annotator):
    c = clip(project, 1, status="ready", duration=1.0, ready_at=timezone.now())
    submitted(c, annotator, ["happy"], at=timezone.now())
    row = dashboard.refresh(project)
    assert DashboardFigures.objects.filter(project=project).count() == 1
    assert row.data["format"] == dashboard.FORMAT and row.data["throughput"]["annotators"][0]["submitted"] == 1
    dashboard.refresh(project)
    assert DashboardFigures.objects.filter(project=project).count() == 1  # updated in place

    # the page shows the stored figures, not new ones: change the stored row and see it
    data = row.data
    data["throughput"]["annotators"][0]["username"] = "stored-<b>name</b>"
    DashboardFigures.objects.filter(pk=row.pk).update(data=data)
    client.force_login(manager)
    html = client.get(reverse("annotations:dashboard", args=[project.slug])).content.decode()
    assert "stored-&lt;b&gt;name&lt;/b&gt;" in html and "<b>name</b>" not in html
    assert html.count("<svg") >= 5 and "the numbers" in html


def test_a_small_project_without_figures_is_computed_on_the_spot(client, project, manager):
    client.force_login(manager)
    response = client.get(reverse("annotations:dashboard", args=[project.slug]))
    assert response.status_code == 200 and DashboardFigures.objects.filter(project=project).exists()


def test_a_big_project_waits_for_the_task(client, project, manager, monkeypatch):
    monkeypatch.setattr(dashboard, "INLINE_LIMIT", 0)
    clip(project, 1)
    client.force_login(manager)
    html = client.get(reverse("annotations:dashboard", args=[project.slug])).content.decode()
    assert "being computed for the first time" in html
    assert not DashboardFigures.objects.filter(project=project).exists()


def test_stale_format_is_recomputed(project):
    DashboardFigures.objects.create(project=project, data={"format": dashboard.FORMAT - 1}, computed_at=NOW)
    assert dashboard.stored(project) is None
    data, _ = dashboard.figures_for(project)
    assert data["format"] == dashboard.FORMAT


@pytest.mark.parametrize("who", ["annotator", "outsider", "reviewer"])
def test_only_managers_see_the_dashboard(client, project, annotator, outsider, django_user_model, who):
    users = {"annotator": annotator, "outsider": outsider}
    if who == "reviewer":
        users["reviewer"] = django_user_model.objects.create_user("rita", password="pw-rita-12345")
        set_membership(project=project, user=users["reviewer"], role=Role.REVIEWER)
    client.force_login(users[who])
    assert client.get(reverse("annotations:dashboard", args=[project.slug])).status_code == 404
    assert client.post(reverse("annotations:dashboard-refresh", args=[project.slug])).status_code == 404


def test_refresh_button_recomputes_through_the_task(client, project, manager, django_capture_on_commit_callbacks):
    client.force_login(manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("annotations:dashboard-refresh", args=[project.slug]))
    assert response.status_code == 302
    assert DashboardFigures.objects.filter(project=project).exists()  # eager in tests: the task ran


def test_beat_task_refreshes_every_live_project_and_skips_archived(project, manager):
    from annotations import tasks
    from annotations.services.projects import create_project

    archived = create_project(name="Old", creator=manager)
    archived.archived = True
    archived.save(update_fields=["archived"])
    result = tasks.refresh_dashboards()
    assert result["refreshed"] >= 1 and result["failed"] == []
    assert DashboardFigures.objects.filter(project=project).exists()
    assert not DashboardFigures.objects.filter(project=archived).exists()


def test_with_wheels_the_models_show_the_wheel_metric_and_the_vocabulary_beside_it(client, project, manager,
                                                                                    annotator):
    from annotations.models import Review
    from tests.conftest import reference_path

    folder = reference_path("emotion_wheel")
    c = clip(project, 1, split="test", label_state="verified", verified_at=NOW)
    first = submitted(c, annotator, ["happy", "sad"], at=NOW)
    Review.objects.create(annotation=first, reviewer=manager, decision="accept", annotation_version=1)
    Prediction.objects.create(clip=c, backend="internvl", model_version="internvl:v1",
                              labels=[{"term": "joyful"}, {"term": "angry"}])
    row = dashboard.refresh(project, wheel_dir=str(folder))
    (model,) = row.data["models"]
    assert row.data["wheel"] and model["metric"] == "wheel" and model["clips"] == 1
    # joyful is happy on the wheels' coarse level, not a project-vocabulary match for "happy"
    assert model["f"] > model["vocabulary"]["term"]["f"]
    client.force_login(manager)
    html = client.get(reverse("annotations:dashboard", args=[project.slug])).content.decode()
    assert "emotion-wheel F (level 1, mean over wheels)" in html and "F over the project vocabulary</th>" in html
