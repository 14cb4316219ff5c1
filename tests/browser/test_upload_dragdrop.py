"""Upload by drag and drop on the project page, in a real Chromium against `make run`: two files dropped at
once, one good clip and one empty file, go up with a progress bar and come back as one line each; the good
one is imported although the other is rejected by name. And the page's polling stops only when the server
says nothing more is coming, not at "0 queued".
"""

import base64
import re
import shutil
import uuid
from pathlib import Path

import pytest

from ml.testing.samples import make_clip
from tests.browser.shots import shot
from tests.conftest import needs_ffmpeg

READY_TIMEOUT_MS = 60_000
SCREENSHOT_COPY = Path("/tmp/affectloop-upload.png")

pytestmark = [pytest.mark.browser, needs_ffmpeg]

# A DataTransfer holding the files, as a person's drag from the desktop carries them.
MAKE_DATA_TRANSFER = """(files) => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, { type: f.type }));
  }
  return dt;
}"""


def log_in_and_create_project(page, platform) -> str:
    from playwright.sync_api import expect

    page.goto(f"{platform.url}/accounts/login/")
    page.get_by_label("Username").fill(platform.admin_user)
    page.get_by_label("Password").fill(platform.admin_password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    name = f"Drops {uuid.uuid4().hex[:8]}"
    page.get_by_role("link", name="New project").click()
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    return page.url


def test_dropped_files_upload_with_progress_and_a_line_each(embedded_platform, page, tmp_path):
    from playwright.sync_api import expect

    platform = embedded_platform
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    video = make_clip(tmp_path / "dropped-interview.mp4", seconds=1.5, extra=["-metadata", f"comment={uuid.uuid4()}"])
    project_url = log_in_and_create_project(page, platform)
    expect(page.locator(".dropzone .help")).to_be_visible()  # the script is on: drops are offered

    files = [{"name": video.name, "type": "video/mp4", "b64": base64.b64encode(video.read_bytes()).decode()},
             {"name": "empty.mp4", "type": "video/mp4", "b64": ""}]
    transfer = page.evaluate_handle(MAKE_DATA_TRANSFER, files)
    page.dispatch_event("#upload", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    expect(page.locator("#dropzone")).to_have_class(re.compile(r"\bdragover\b"))
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})

    bar = page.locator("#upload-bar")
    expect(bar).to_be_visible()
    expect(bar).to_have_js_property("value", 100)
    lines = page.locator("#upload-results li")
    expect(lines).to_have_count(2)
    imported = page.locator('#upload-results li[data-status="imported"]')
    expect(imported).to_contain_text(f"imported {video.name}: clip ")
    expect(imported).to_have_class("msg-success")
    rejected = page.locator('#upload-results li[data-status="rejected"]')
    expect(rejected).to_have_text("rejected empty.mp4: the file is empty")
    expect(rejected).to_have_attribute("data-file", "empty.mp4")
    expect(page.locator("#upload-state")).to_have_text("1 imported, 1 rejected")
    expect(page.locator("#dropzone")).not_to_have_class(re.compile(r"\bdragover\b"))
    assert page.url == project_url  # sent by the script: the page never navigated

    # The new clip shows up and turns ready in the list without a reload (the lines stay), then polling
    # stops: no pre-labeling is configured, so nothing more is coming.
    row = page.locator("table.clips tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", re.compile("^(ready|failed)$"), timeout=READY_TIMEOUT_MS)
    assert row.get_attribute("data-status") == "ready", (
        f"clip failed: {row.locator('td.status').inner_text()}\n{platform.log_tail()}")
    expect(row.locator("td.duration")).to_have_text("1.5 s")
    expect(page.locator("#counts")).to_have_attribute("data-polling", "off", timeout=15_000)
    expect(page.locator('#counts [data-count="ready"]')).to_have_text("1")
    expect(page.locator('[data-prelabel="empty"]')).to_have_text("0")  # filled from status.json
    expect(lines).to_have_count(2)

    thumb = row.locator("td.thumb img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    shutil.copyfile(shot(page, "project-upload-results"), SCREENSHOT_COPY)
    assert dialogs == []


def test_polling_goes_on_while_the_server_says_busy_and_stops_when_it_does_not(embedded_platform, page):
    """The old stop condition was "0 queued", which is also what the wait before a batch is queued shows.
    Here status.json says busy with 0 queued four times (clips waiting), then not busy."""
    from playwright.sync_api import expect

    answers: list[bool] = []

    def answer(route):
        real = route.fetch()
        data = real.json()
        busy = len(answers) < 4
        data["busy"] = busy
        data["prelabel"].update(queued=0, waiting=1 if busy else 0)
        answers.append(busy)
        route.fulfill(response=real, json=data)

    project_url = log_in_and_create_project(page, embedded_platform)
    page.route(re.compile(r"/status\.json$"), answer)
    page.goto(project_url)
    expect(page.locator("#counts")).to_have_attribute("data-polling", "off", timeout=20_000)
    assert answers == [True, True, True, True, False]
    expect(page.locator('[data-prelabel="waiting"]')).to_have_text("0")
    page.wait_for_timeout(3_000)
    assert len(answers) == 5, "the page polled again after the server said nothing more is coming"
