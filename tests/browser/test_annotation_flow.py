"""Annotators in a real Chromium against `make run`, keyboard only: claim a clip with model chips, play and
seek it, accept and add labels, reload mid-work and find the draft, submit; a second tab's stale write
gets the conflict dialog. Labels and transcripts carrying markup never run.
"""

import json
import re
import uuid

import pytest

from ml.testing.samples import generate_sample_clips
from tests.browser import pages
from tests.browser.pages import add_label
from tests.browser.shots import shot
from tests.conftest import needs_ffmpeg

pytestmark = [pytest.mark.browser, needs_ffmpeg]
HOSTILE = "<img src=x onerror=alert(1)>"


def shell(platform, code: str) -> str:
    result = platform.manage("shell", "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


@pytest.fixture(scope="module")
def work_project(embedded_platform, tmp_path_factory):
    """A project with three ready clips, fused model labels on each, and two annotators."""
    platform = embedded_platform
    folder = tmp_path_factory.mktemp("work-clips")
    generate_sample_clips(folder, 3, seconds=2.0, width=160, height=120, seed=11, speech=False)
    name = f"Work {uuid.uuid4().hex[:6]}"
    result = platform.manage("import_clips", str(folder), "--project", name, "--create-project")
    assert result.returncode == 0, result.stdout + result.stderr
    setup = f"""
import json, time
from django.contrib.auth import get_user_model
from annotations.models import Clip, Prediction, Project, Role
from annotations import selectors
from annotations.services.projects import set_membership
project = Project.objects.get(name={name!r})
deadline = time.time() + 60
while Clip.objects.filter(project=project).exclude(status="ready").exists() and time.time() < deadline:
    time.sleep(0.3)
users = []
for n in ("ann", "ben", "rev"):
    u, _ = get_user_model().objects.get_or_create(username=n + project.slug[-6:])
    u.set_password("annotator-pass-1"); u.save()
    set_membership(project=project, user=u, role=Role.REVIEWER if n == "rev" else Role.ANNOTATOR)
    users.append(u.username)
# Test-split clips are annotated blind (no chips): these flows take the others first.
clips = sorted(Clip.objects.filter(project=project), key=lambda c: (selectors.clip_split(c) == "test", c.pk))
for i, clip in enumerate(clips):
    clip.priority = 1.0 - i / 10
    clip.transcript = {HOSTILE!r} + " she said"
    clip.save(update_fields=["priority", "transcript"])
    Prediction.objects.create(clip=clip, backend="fused", model_version="fused:test", labels=[
        {{"term": "calm", "score": 0.81, "support": [{{"backend": "internvl", "score": 0.8}}]}},
        {{"term": {HOSTILE!r}, "score": 0.4, "support": [{{"backend": "affectgpt", "score": 0.4}}]}}])
print(json.dumps({{"slug": project.slug, "users": users,
                  "ready": Clip.objects.filter(project=project, status="ready").count(),
                  "seen": sum(selectors.clip_split(c) != "test" for c in clips)}}))
"""
    info = json.loads(shell(platform, setup).splitlines()[-1])
    assert info["ready"] == 3 and info["seen"] >= 2, info
    return info


def log_in(page, platform, username):
    pages.log_in(page, platform, username, "annotator-pass-1")


def test_an_annotator_works_a_clip_with_the_keyboard_only(embedded_platform, work_project, page):
    from playwright.sync_api import expect

    platform = embedded_platform
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in(page, platform, work_project["users"][0])
    page.goto(f"{platform.url}/p/{work_project['slug']}/work/")
    page.get_by_role("button", name="Start annotating").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/clips/\d+/(\?take=1)?$"))
    page.wait_for_load_state()  # the URL changes before the page's scripts have run
    clip_url = page.url
    expect(page.locator("#model-chips .chip")).to_have_count(2)
    expect(page.locator("#model-chips")).to_contain_text("internvl")

    # Play, then seek forward with the keys.
    page.locator("body").press("Space")
    page.wait_for_function("() => !document.getElementById('video').paused && document.getElementById('video').currentTime > 0.1")
    page.locator("body").press("Space")
    before = page.evaluate("() => document.getElementById('video').currentTime")
    page.locator("body").press(".")  # one frame forward
    page.wait_for_function(f"() => document.getElementById('video').currentTime > {before}")

    # Accept all model labels, remove the hostile one, add one through autocomplete, mark evidence.
    page.locator("body").press("a")
    expect(page.locator("#labels li")).to_have_count(2)
    page.locator("body").press("2")
    page.locator("body").press("Delete")
    expect(page.locator("#labels li")).to_have_count(1)
    page.locator("body").press("+")
    page.keyboard.type("reliev")
    expect(page.locator("#suggestions li").first).to_contain_text("relieved")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    expect(page.locator("#labels li")).to_have_count(2)
    page.locator("body").press("f")
    expect(page.locator("#save-status")).to_have_text("Saved", timeout=10_000)
    shot(page, "clip-page")

    # A reload mid-work finds the draft on the server.
    page.reload()
    expect(page.locator("#labels li")).to_have_count(2)
    expect(page.locator("#labels li").nth(1)).to_contain_text("relieved")
    expect(page.locator("#labels li.selected .evidence-toggle.on, #labels li .evidence-toggle.on")).to_have_count(1)

    # Submit and go on, with the keyboard.
    page.locator("body").press("Control+Enter")
    page.wait_for_url(lambda url: url != clip_url and "/clips/" in url)
    expect(page.locator("#labels li")).to_have_count(0)
    assert page.locator("img[src=x]").count() == 0 and dialogs == [], dialogs


def test_a_stale_second_tab_gets_the_conflict(embedded_platform, work_project, browser):
    from playwright.sync_api import expect

    platform = embedded_platform
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        first = context.new_page()
        log_in(first, platform, work_project["users"][1])
        first.goto(f"{platform.url}/p/{work_project['slug']}/work/")
        first.get_by_role("button", name="Start annotating").click()
        expect(first).to_have_url(re.compile(r"/clips/\d+/(\?take=1)?$"))
        first.wait_for_load_state()  # the URL changes before the page's scripts have run
        second = context.new_page()
        second.goto(first.url)
        expect(second.locator("#labels")).to_be_attached()
        # (This clip may be a blind test-split one: labels come from the vocabulary, not the chips.)
        for tab, word in ((first, "calm"), (first, "anxious")):
            add_label(tab, word)
        expect(first.locator("#save-status")).to_have_text("Saved", timeout=10_000)
        add_label(second, "bored")
        expect(second.locator("#conflict-dialog")).to_be_visible(timeout=10_000)
        expect(second.locator("#conflict-stored li")).to_have_count(2)
        expect(second.locator("#conflict-mine li")).to_have_count(1)
        shot(second, "clip-conflict")
        second.locator("#conflict-take-stored").click()
        expect(second.locator("#labels li")).to_have_count(2)
        # The first tab submits; the second, still on the old version, submits too: a conflict, not a
        # second submission.
        clip_url = first.url
        first.locator("body").press("Control+Enter")
        first.wait_for_url(lambda url: url != clip_url)
        second.locator("body").press("Control+Enter")
        expect(second.locator("#conflict-dialog")).to_be_visible(timeout=10_000)
        expect(second.locator("#save-status")).to_contain_text("Conflict")
    finally:
        context.close()



def test_a_reviewer_rejects_one_annotation_and_accepts_another(embedded_platform, work_project, page):
    from playwright.sync_api import expect

    platform = embedded_platform
    ann, ben, rev = work_project["users"]
    # Two more submissions, through the same services the clip page calls.
    shell(platform, f"""
from django.contrib.auth import get_user_model
from annotations.models import Project
from annotations.services import annotating, queue
project = Project.objects.get(slug={work_project['slug']!r})
for name, word in (({ann!r}, "calm"), ({ben!r}, "anxious")):
    user = get_user_model().objects.get(username=name)
    lease = queue.next_clip(user, project)
    if lease is not None:  # an earlier flow may have used up this annotator's clips
        draft = annotating.start(user, lease.clip)
        annotating.submit(draft, labels=[word], base_version=draft.version)
""")
    log_in(page, platform, rev)
    page.goto(f"{platform.url}/p/{work_project['slug']}/work/")
    shot(page, "work-queue")
    page.get_by_role("button", name="Start reviewing").click()
    expect(page).to_have_url(re.compile(r"/clips/\d+/review$"))
    page.wait_for_load_state()  # the URL changes before the page's scripts have run
    expect(page.locator(".review-row")).to_have_count(1)
    shot(page, "review")
    page.locator(".review-row input[name=reason]").fill("the face says otherwise")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".messages")).to_contain_text("Reject:")
    expect(page).to_have_url(re.compile(r"/clips/\d+/review$"))
    page.wait_for_load_state()  # the URL changes before the page's scripts have run
    page.get_by_role("button", name="Accept", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("Accept:")
    decisions = shell(platform, f"""
from annotations.models import Review
print(sorted(Review.objects.filter(reviewer__username={rev!r}).values_list("decision", flat=True)))
""")
    assert decisions.splitlines()[-1] == "['accept', 'reject']"


def test_the_managers_pages(embedded_platform, work_project, page):
    from playwright.sync_api import expect

    platform = embedded_platform
    page.goto(f"{platform.url}/accounts/login/")
    page.get_by_label("Username").fill(platform.admin_user)
    page.get_by_label("Password").fill(platform.admin_password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    page.goto(f"{platform.url}/p/{work_project['slug']}/clips/?label=calm&label_source=model")
    expect(page.locator("table.clip-list tbody tr")).to_have_count(3)
    assert page.locator("img[src=x]").count() == 0
    shot(page, "clip-list")
    page.goto(f"{platform.url}/p/{work_project['slug']}/members/")
    expect(page.locator("table.members tbody tr")).to_have_count(3)
    shot(page, "members")


def test_two_annotators_in_two_browsers_never_share_a_clip_beyond_the_overlap(embedded_platform, browser,
                                                                                 tmp_path):
    from playwright.sync_api import expect

    platform = embedded_platform
    folder = tmp_path / "pair"
    generate_sample_clips(folder, 2, seconds=1.0, width=160, height=120, seed=5, speech=False)
    name = f"Pair {uuid.uuid4().hex[:6]}"
    assert platform.manage("import_clips", str(folder), "--project", name, "--create-project").returncode == 0
    users = json.loads(shell(platform, f"""
import json, time
from django.contrib.auth import get_user_model
from annotations.models import Clip, Project, Role
from annotations.services.projects import set_membership
project = Project.objects.get(name={name!r})
deadline = time.time() + 60
while Clip.objects.filter(project=project).exclude(status="ready").exists() and time.time() < deadline:
    time.sleep(0.3)
names = []
for n in ("p1", "p2", "p3"):
    u, _ = get_user_model().objects.get_or_create(username=n + project.slug[-6:])
    u.set_password("annotator-pass-1"); u.save()
    set_membership(project=project, user=u, role=Role.ANNOTATOR)
    names.append(u.username)
print(json.dumps({{"slug": project.slug, "users": names}}))
""").splitlines()[-1])
    contexts = [browser.new_context() for _ in users["users"]]
    try:
        pages = [c.new_page() for c in contexts]
        for page, user in zip(pages, users["users"]):
            log_in(page, platform, user)
            page.goto(f"{platform.url}/p/{users['slug']}/work/")
        for page in pages:  # overlap 1, two clips, three annotators
            page.get_by_role("button", name="Start annotating").click()
        got = []
        for page in pages:
            page.wait_for_load_state()
            match = re.search(r"/clips/(\d+)/(?:\?take=1)?$", page.url)
            got.append(match.group(1) if match else None)
        claimed = [g for g in got if g]
        assert len(claimed) == 2 and len(set(claimed)) == 2, got
        expect(pages[got.index(None)].locator(".messages")).to_contain_text("Nothing in the queue")
    finally:
        for c in contexts:
            c.close()
