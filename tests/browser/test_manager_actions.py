"""A manager in a real Chromium against `make run`: moves a held clip to another annotator from the clip's
history page, and sends a clip short of its overlap to review from the clip list."""

import json
import uuid

import pytest

from ml.testing.samples import generate_sample_clips
from tests.browser.pages import log_in_admin
from tests.browser.shots import shot
from tests.conftest import needs_ffmpeg

pytestmark = [pytest.mark.browser, needs_ffmpeg]


@pytest.fixture(scope="module")
def held_project(embedded_platform, tmp_path_factory):
    """Two ready clips, overlap 2: ann holds the first with a draft; ann has submitted the second."""
    platform = embedded_platform
    folder = tmp_path_factory.mktemp("manager-clips")
    generate_sample_clips(folder, 2, seconds=2.0, width=160, height=120, seed=23, speech=False)
    name = f"Leases {uuid.uuid4().hex[:6]}"
    result = platform.manage("import_clips", str(folder), "--project", name, "--create-project")
    assert result.returncode == 0, result.stdout + result.stderr
    code = f"""
import json, time
from django.contrib.auth import get_user_model
from annotations.models import Clip, Project, Role
from annotations.services import annotating, queue
from annotations.services.projects import set_membership, update_config
project = Project.objects.get(name={name!r})
deadline = time.time() + 60
while project.clips.exclude(status="ready").exists() and time.time() < deadline:
    time.sleep(0.3)
update_config(project, {{"annotation": {{"overlap": 2}}}})
users = {{}}
for n in ("ann", "ben"):
    u, _ = get_user_model().objects.get_or_create(username=n + project.slug[-6:])
    set_membership(project=project, user=u, role=Role.ANNOTATOR)
    users[n] = u
held, done = project.clips.order_by("pk")
queue.claim(users["ann"], held)
draft = annotating.start(users["ann"], held)
annotating.save_draft(draft, labels=["calm"], base_version=draft.version)
queue.claim(users["ann"], done)
d = annotating.start(users["ann"], done)
annotating.submit(d, labels=["tense"], base_version=d.version)
print(json.dumps({{"slug": project.slug, "held": held.pk, "done": done.pk, "done_name": done.name,
                  "ann": users["ann"].username, "ben": users["ben"].username}}))
"""
    result = platform.manage("shell", "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_manager_moves_a_held_clip_to_another_annotator(embedded_platform, held_project, page):
    from playwright.sync_api import expect

    platform, info = embedded_platform, held_project
    log_in_admin(page, platform)
    page.goto(f"{platform.url}/p/{info['slug']}/clips/")
    row = page.locator("table.clip-list tbody tr", has=page.locator(f"input[value='{info['held']}']"))
    expect(row).to_contain_text(info["ann"])
    row.get_by_role("link", name=info["ann"]).click()
    expect(page.locator(".lease-row")).to_have_count(1)
    shot(page, "clip-leases")
    page.get_by_label(f"Move {info['ann']}'s lease to").select_option(label=info["ben"])
    page.get_by_role("button", name="Reassign").click()
    expect(page.locator("ul.messages")).to_contain_text(f"to {info['ben']}")
    expect(page.locator(f".lease-row[data-user='{info['ben']}']")).to_have_count(1)
    draft_owner = platform.manage("shell", "-c", f"from annotations.models import Annotation; print("
                                  f"Annotation.objects.get(clip_id={info['held']}).annotator.username)")
    assert draft_owner.stdout.strip().splitlines()[-1] == info["ben"]  # the draft moved with the lease


def test_a_manager_sends_a_clip_to_review_before_its_overlap(embedded_platform, held_project, page):
    from playwright.sync_api import expect

    platform, info = embedded_platform, held_project
    log_in_admin(page, platform)
    page.goto(f"{platform.url}/p/{info['slug']}/clips/")
    page.get_by_label(f"select {info['done_name']}").check()
    page.get_by_label("Action on the selected clips").select_option("review")
    page.get_by_role("button", name="Apply to selected").click()
    expect(page.get_by_text("Sent 1 clip to review.")).to_be_visible()
    row = page.locator("table.clip-list tbody tr", has=page.locator(f"input[value='{info['done']}']"))
    expect(row).to_contain_text("Submitted")
