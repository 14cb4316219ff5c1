"""A manager's first minutes in a real Chromium against `make run`: log in, create a project, upload a
clip, and watch the page (its own polling script) turn the clip ready with a thumbnail and a duration.
A transcript with markup in it must come back as text.
"""

import re
import uuid

import pytest

from ml.testing.samples import make_clip
from tests.browser.shots import shot
from tests.conftest import needs_ffmpeg

READY_TIMEOUT_MS = 60_000
HOSTILE = "<script>alert(1)</script>"

pytestmark = [pytest.mark.browser, needs_ffmpeg]


def test_manager_uploads_a_clip_and_sees_it_ready(embedded_platform, page, tmp_path):
    from playwright.sync_api import expect

    platform = embedded_platform
    dialogs: list[str] = []

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    video = make_clip(tmp_path / "first-interview.mp4", seconds=2.0,
                      extra=["-metadata", f"comment={uuid.uuid4()}"])
    name = f"Browser {uuid.uuid4().hex[:8]}"

    # Log in by typing, as a person would.
    page.goto(f"{platform.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(platform.admin_user)
    page.get_by_label("Password").fill(platform.admin_password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()

    # Create a project.
    page.get_by_role("link", name="New project").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description").fill("Interviews recorded for the pilot")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.locator(".messages")).to_contain_text(f"Project {name} created.")

    # Upload one clip with a transcript that carries markup.
    page.locator("#id_files").set_input_files(str(video))
    page.locator("#id_transcript").fill(f"{HOSTILE} she said, laughing")
    page.locator("#id_language").fill("en")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".messages .msg-success")).to_contain_text("imported first-interview.mp4")

    # The page polls status.json and reloads itself; no test-side reloads here.
    row = page.locator("table.clips tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", re.compile("^(ready|failed)$"), timeout=READY_TIMEOUT_MS)
    assert row.get_attribute("data-status") == "ready", (
        f"clip failed: {row.locator('td.status').inner_text()}\n{platform.log_tail()}")
    expect(row.locator("td.status .badge")).to_have_text("ready")
    expect(row.locator("td.duration")).to_have_text("2.0 s")

    thumb = row.locator("td.thumb img")
    thumb.scroll_into_view_if_needed()
    expect(thumb).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    assert thumb.evaluate("img => img.naturalWidth") > 0

    # The markup is shown as text, never parsed into an element, and no script ran.
    transcript = row.locator("td.transcript")
    expect(transcript).to_contain_text(HOSTILE)
    assert transcript.locator("script").count() == 0
    assert page.locator("main script").count() == 0
    assert dialogs == [], f"a dialog fired: {dialogs}"

    shot(page, "project-page")
    assert dialogs == []


def test_a_given_password_is_replaced_at_first_login_and_guessing_locks_out(embedded_platform, page, tmp_path):
    from playwright.sync_api import expect

    platform = embedded_platform
    name, given = f"new{uuid.uuid4().hex[:6]}", "given-by-the-admin-1"
    created = platform.manage("shell", "-c", (
        "from django.contrib.auth import get_user_model; from annotations.accounts import require_password_change; "
        f"u = get_user_model().objects.create_user({name!r}, password={given!r}); require_password_change(u)"))
    assert created.returncode == 0, created.stderr

    page.goto(f"{platform.url}/accounts/login/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(given)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Change password")).to_be_visible()
    expect(page.locator(".notice")).to_contain_text("Choose your own to continue")
    page.goto(f"{platform.url}/")  # nothing else opens first
    expect(page.get_by_role("heading", name="Change password")).to_be_visible()
    shot(page, "password-change")
    page.get_by_label("Old password").fill(given)
    page.get_by_label("New password", exact=True).fill("my own long passphrase")
    page.get_by_label("New password confirmation").fill("my own long passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("Password changed.")

    page.get_by_role("button", name=re.compile("Log out")).click()
    for _ in range(6):
        page.goto(f"{platform.url}/accounts/login/")
        page.get_by_label("Username").fill(name)
        page.get_by_label("Password").fill("not my password")
        page.get_by_role("button", name="Log in").click()
    page.goto(f"{platform.url}/accounts/login/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("my own long passphrase")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Too many failed logins")).to_be_visible()
    shot(page, "locked-out")
