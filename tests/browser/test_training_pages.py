"""A manager in a real Chromium against `make run`: the runs page with its live banner, a finished run's plots,
a live run's page following the run through htmx polling (under the site's CSP), and promoting a candidate on
the models page. Runs and versions are rows made with `manage.py shell` (no worker trains anything)."""

import json
import uuid

import pytest

from tests.browser.pages import log_in_admin
from tests.browser.shots import shot

pytestmark = [pytest.mark.browser]

SETUP = """
import json
from datetime import timedelta
from django.utils import timezone
from annotations.models import DatasetSnapshot, ModelVersion, TrainingRun
from annotations.services.projects import create_project
project = create_project(name={name!r}, creator=None)
now = timezone.now()
snap = DatasetSnapshot.objects.create(project=project, name="verified-" + project.slug[-6:], content_hash="ab" * 32,
                                      clip_count=120, split_counts={{"train": 96, "val": 12, "test": 12}})
metrics = []
for step in range(1, 41):
    entry = {{"step": step, "epoch": step / 20, "loss": round(3.2 * 0.93 ** step + 0.4, 4), "lr": 1e-4}}
    if step % 10 == 0:
        entry["eval"] = {{"eval_loss": round(2.5 * 0.9 ** step + 0.5, 4), "exact_match": 0.1 + step / 100,
                          "f": 0.3 + step / 120, "precision": 0.35 + step / 110, "recall": 0.25 + step / 130}}
    metrics.append(entry)
done = TrainingRun.objects.create(project=project, snapshot=snap, status="succeeded", progress=1.0, metrics=metrics,
                                  eval_metrics=metrics[-1]["eval"], started_at=now - timedelta(minutes=42),
                                  finished_at=now - timedelta(minutes=3),
                                  log="".join(f"step {{m['step']}} loss {{m['loss']}}\\n" for m in metrics))
live = TrainingRun.objects.create(project=project, snapshot=snap, status="running", progress=0.25,
                                  metrics=metrics[:10], started_at=now - timedelta(minutes=2), log="step 10\\n")
active = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:base-" + project.slug[-6:],
                                     base_model="OpenGVLab/InternVL3-1B-hf", status="active",
                                     promoted_at=now - timedelta(days=3), metrics={{"eval": {{"f": 0.52, "exact_match": 0.31}}}})
ModelVersion.objects.filter(pk=active.pk).update(created_at=now - timedelta(days=3))
candidate = ModelVersion.objects.create(project=project, backend="internvl", name="internvl:run-" + project.slug[-6:],
                                        base_model="OpenGVLab/InternVL3-1B-hf", parent=active, training_run=done,
                                        metrics={{"eval": metrics[-1]["eval"], "snapshot": snap.pk, "training_run": done.pk}})
print(json.dumps({{"slug": project.slug, "done": done.pk, "live": live.pk, "candidate": candidate.name,
                  "active": active.name}}))
"""


@pytest.fixture(scope="module")
def training_project(embedded_platform):
    name = f"Retraining {uuid.uuid4().hex[:6]}"
    result = embedded_platform.manage("shell", "-c", SETUP.format(name=name))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_manager_watches_training_and_promotes_a_candidate(embedded_platform, training_project, page):
    from playwright.sync_api import expect

    platform, info = embedded_platform, training_project
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    log_in_admin(page, platform)

    # The runs page: the list, the live run's banner, the start and schedule forms.
    page.goto(f"{platform.url}/p/{info['slug']}/training/")
    expect(page.locator("#training-banner")).to_contain_text(f"Run #{info['live']} is running")
    expect(page.locator(f"tr[data-run='{info['done']}']")).to_contain_text("succeeded")
    shot(page, "training-runs")

    # A finished run: its plots are SVG, with the numbers under them, and nothing polls.
    page.get_by_role("link", name=f"#{info['done']}", exact=True).click()
    expect(page.locator("#run-live svg")).to_have_count(2)
    expect(page.locator("#run-live")).not_to_have_attribute("hx-trigger", "every 2s")
    page.get_by_text("Loss: the numbers").click()
    expect(page.locator("figure.plot table").first).to_be_visible()
    page.get_by_text("Loss: the numbers").click()
    shot(page, "training-run")

    # The live run's page follows the run without a reload (htmx under script-src 'self'), then stops polling.
    page.goto(f"{platform.url}/p/{info['slug']}/training/{info['live']}/")
    expect(page.locator("#run-live")).to_have_attribute("hx-trigger", "every 2s")
    update = (f"from annotations.models import TrainingRun; TrainingRun.objects.filter(pk={info['live']})"
              f".update(progress=0.8, log='step 32 nearly there\\n')")
    assert platform.manage("shell", "-c", update).returncode == 0
    expect(page.locator("#run-live progress")).to_have_attribute("value", "80", timeout=10_000)
    expect(page.locator(".run-log")).to_contain_text("nearly there")
    finish = (f"from django.utils import timezone; from annotations.models import TrainingRun; "
              f"TrainingRun.objects.filter(pk={info['live']}).update(status='failed', error='worker lost', "
              f"finished_at=timezone.now())")
    assert platform.manage("shell", "-c", finish).returncode == 0
    expect(page.locator("#run-live")).to_have_attribute("data-status", "failed", timeout=10_000)
    expect(page.locator("#run-live")).not_to_have_attribute("hx-trigger", "every 2s")
    expect(page.locator(".run-error")).to_contain_text("worker lost")

    # The models page: lineage, the plot, and promoting the candidate.
    page.goto(f"{platform.url}/p/{info['slug']}/models/")
    expect(page.locator("figure.plot svg")).to_have_count(1)
    candidate = page.locator("table.versions tr", has=page.get_by_text(info["candidate"], exact=True))
    expect(candidate).to_contain_text(info["active"])  # its parent
    shot(page, "models")
    page.get_by_role("button", name=f"Promote {info['candidate']}").click()
    expect(page.locator("ul.messages")).to_contain_text(f"{info['candidate']} is now the active internvl model.")
    expect(candidate.locator(".badge")).to_have_text("active")
    expect(page.get_by_role("button", name="Roll back InternVL")).to_be_visible()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors
