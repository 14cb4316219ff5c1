"""The data-out pages in a real Chromium against `make run`: a manager erases a subject's clips (preview, then
the typed confirmation), creates an API token on the tokens page and uses it from outside the browser, then
revokes it; the Swagger UI at /api/docs/ renders from our own static files under the site's CSP."""

import json
import urllib.error
import urllib.request
import uuid

import pytest

from tests.browser.pages import log_in_admin
from tests.browser.shots import shot

pytestmark = [pytest.mark.browser]

SETUP = """
import json
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from annotations.models import Clip
from annotations.services.projects import create_project
project = create_project(name={name!r}, creator=None)
for n, subject in enumerate(["s017", "s017", "s018"]):
    file = f"clips/{{project.slug}}-{{n}}.mp4"
    file = default_storage.save(file, ContentFile(b"bytes of a clip"))  # with the app's file permissions
    Clip.objects.create(project=project, file=file, sha256=f"{{n + 1:064x}}", name=f"{{subject}}-take{{n}}",
                        size_bytes=15, status=Clip.Status.READY, duration=3.0, metadata={{"subject": subject}})
print(json.dumps({{"slug": project.slug}}))
"""


@pytest.fixture(scope="module")
def data_project(embedded_platform):
    result = embedded_platform.manage("shell", "-c", SETUP.format(name=f"Data {uuid.uuid4().hex[:6]}"))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def api_get(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_manager_erases_a_subject_after_a_preview(embedded_platform, data_project, page):
    from playwright.sync_api import expect

    platform, slug = embedded_platform, data_project["slug"]
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    log_in_admin(page, platform)
    page.goto(f"{platform.url}/p/{slug}/")
    page.get_by_role("link", name="Erase", exact=True).click()
    page.get_by_label("Metadata key").fill("subject")
    page.get_by_label("Value").fill("s017")
    page.get_by_role("button", name="Preview (changes nothing)").click()
    expect(page.get_by_role("heading", name="Would be erased: 2 clips")).to_be_visible()
    shot(page, "erase")

    page.get_by_label("Type ERASE 2 to confirm").fill("ERASE 2")
    page.get_by_role("button", name="Erase 2 clips").click()
    expect(page.locator("ul.messages")).to_contain_text("2 clips")
    page.goto(f"{platform.url}/p/{slug}/clips/")
    expect(page.locator("table.clip-list tbody tr")).to_have_count(1)
    expect(page.locator("table.clip-list")).to_contain_text("s018-take2")
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def test_a_token_made_on_the_page_works_from_outside_until_revoked(embedded_platform, data_project, page):
    from playwright.sync_api import expect

    platform = embedded_platform
    log_in_admin(page, platform)
    page.get_by_role("link", name="API tokens").click()
    page.get_by_role("button", name="Create a token").click()
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("afl_")
    shot(page, "api-tokens")

    projects = f"{platform.url}/api/v1/projects/"
    assert api_get(projects, token) == 200
    page.get_by_role("button", name="Revoke").first.click()
    expect(page.get_by_text("You have no tokens.")).to_be_visible()
    assert api_get(projects, token) == 401


def test_the_api_docs_render_from_our_own_files(embedded_platform, page):
    from playwright.sync_api import expect

    platform = embedded_platform
    errors, hosts = [], set()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    log_in_admin(page, platform)
    page.goto(f"{platform.url}/api/docs/")
    # Swagger UI draws the operations from /api/schema/ once its script ran.
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=20_000)
    expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/projects/")
    shot(page, "api-docs", full_page=False)  # the first screen: the whole schema is 6,000 px tall
    assert hosts == {platform.url.split("/")[2]}, hosts  # no CDN
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors
