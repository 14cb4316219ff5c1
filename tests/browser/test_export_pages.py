"""A manager in a real Chromium against `make run`: requests a dataset export on the exports page, watches the
real worker build it (htmx polling under the site's CSP), and downloads the zip. The verified clips are made
with `manage.py shell` through the same services the UI uses (claim, submit, accept)."""

import io
import json
import uuid
import zipfile

import pytest

from tests.browser.pages import log_in_admin
from tests.browser.shots import shot

pytestmark = [pytest.mark.browser]

SETUP = """
import json
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.contrib.auth import get_user_model
from annotations.models import Clip, Role
from annotations.services import annotating, queue, reviews
from annotations.services.projects import create_project, set_membership
project = create_project(name={name!r}, creator=None)
User = get_user_model()
alice = User.objects.create_user("ann-" + project.slug[-6:], password="pw-ann-12345678")
rita = User.objects.create_user("rev-" + project.slug[-6:], password="pw-rev-12345678")
set_membership(project=project, user=alice, role=Role.ANNOTATOR)
set_membership(project=project, user=rita, role=Role.REVIEWER)
for n, (name, labels) in enumerate([("interview-03", ["anxious", "hopeful"]), ("interview-01", ["calm"]),
                                    ("interview-02", ["angry"])]):
    file = f"clips/{{project.slug}}-{{n}}.mp4"
    file = default_storage.save(file, ContentFile(b"bytes of a clip"))  # with the app's file permissions
    clip = Clip.objects.create(project=project, file=file, sha256=f"{{n + 1:064x}}", name=name, size_bytes=15,
                               status=Clip.Status.READY, duration=3.0, transcript="I said " + name)
    queue.claim(alice, clip)
    draft = annotating.start(alice, clip)
    annotation = annotating.submit(draft, labels=labels, base_version=draft.version)
    reviews.review(annotation, reviewer=rita, decision="accept")
print(json.dumps({{"slug": project.slug}}))
"""


@pytest.fixture(scope="module")
def export_project(embedded_platform):
    name = f"Exports {uuid.uuid4().hex[:6]}"
    result = embedded_platform.manage("shell", "-c", SETUP.format(name=name))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_manager_exports_the_verified_clips_and_downloads_the_zip(embedded_platform, export_project, page):
    from playwright.sync_api import expect

    platform, slug = embedded_platform, export_project["slug"]
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    log_in_admin(page, platform)

    page.goto(f"{platform.url}/p/{slug}/")
    page.get_by_role("link", name="Exports", exact=True).click()
    expect(page.get_by_role("heading", name="Exports", exact=True)).to_be_visible()
    page.get_by_label("Format").select_option("merov-csv")
    page.get_by_label("include the files in the zip").check()
    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator("ul.messages")).to_contain_text("is queued")

    # The worker builds it; the table follows by polling, then stops.
    row = page.locator("table.exports tbody tr").first
    expect(row).to_have_attribute("data-status", "done", timeout=60_000)
    expect(page.locator("#exports")).not_to_have_attribute("hx-trigger", "every 2s")
    expect(row).to_contain_text("merov-csv")
    expect(row.locator("td").nth(5)).to_have_text("3")
    expect(page.locator("table.snapshots tbody tr")).to_have_count(1)
    shot(page, "exports")

    with page.expect_download() as info:
        row.get_by_role("link", name="Download").click()
    download = info.value
    assert download.suggested_filename.endswith("-merov-csv.zip")
    with zipfile.ZipFile(io.BytesIO(open(download.path(), "rb").read())) as archive:
        names = archive.namelist()
        assert names[0] == "README.md" and names[-1] == "merov.csv"
        assert len([name for name in names if name.startswith("media/clips/")]) == 3
        assert archive.read("merov.csv").decode() == ("name,openset\ninterview-01,['calm']\ninterview-02,['angry']\n"
                                                      "interview-03,\"['anxious', 'hopeful']\"\n")
        assert "| clips | 3 |" in archive.read("README.md").decode()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors
