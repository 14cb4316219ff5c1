"""The managers' exports page (annotations/export_views.py): who sees it, requesting an export (the build runs
eagerly on commit here), the live fragment, and who may download what, when."""

import hashlib
import io
import zipfile
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotations.models import DatasetSnapshot, Export, Role
from annotations.services import exports, snapshots
from annotations.services.projects import create_project, set_membership
from ml.metrics import read_label_csv

from .test_snapshots import clip_in, people, verified  # noqa: F401 - people is a fixture

pytestmark = pytest.mark.django_db
HOSTILE = "<img src=x onerror=alert(1)>"


def url(name, project, *args):
    return reverse(f"annotations:{name}", args=[project.slug, *args])


@pytest.fixture
def verified_clips(project, people):  # noqa: F811
    for name, split, labels in (("b-clip", "train", ["calm"]), ("a-clip", "train", ["sad"]),
                                ("c-clip", "val", ["angry"])):
        verified(clip_in(project, split, name=name), people, labels)


@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


def done_export(project, fmt="merov-csv", options=None, capture=None) -> Export:
    snapshot = snapshots.freeze(project)
    with capture(execute=True):
        export = exports.request_export(snapshot, fmt, options)
    export.refresh_from_db()
    assert export.status == Export.Status.DONE
    return export


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_a_manager_requests_an_export_of_the_verified_clips_now(manager_client, project, verified_clips,
                                                                django_capture_on_commit_callbacks):
    page = manager_client.get(url("exports", project))
    assert page.status_code == 200
    assert b"No exports yet." in page.content and b"Everything verified now" in page.content

    with django_capture_on_commit_callbacks(execute=True):
        response = manager_client.post(url("exports", project), {
            "snapshot": "", "format": "merov-csv", "media": "link", "filters": "split=train"})
    assert response.status_code == 302 and response["Location"] == url("exports", project)

    export = Export.objects.get()
    assert export.status == Export.Status.DONE and export.row_count == 2
    assert export.options == {"filters": {"split": "train"}, "media": "link", "pseudonymise": False}
    response = manager_client.get(url("exports", project))
    assert [str(m) for m in response.context["messages"]] == [f"Export #{export.pk} is queued."]
    html = response.content.decode()
    assert f'data-export="{export.pk}" data-status="done"' in html
    assert export.checksum[:12] in html and url("export-download", project, export.pk) in html
    assert "hx-get" not in html.split('id="exports"')[1].split(">")[0]  # nothing live: no polling
    assert DatasetSnapshot.objects.get().name in html

    download = manager_client.get(url("export-download", project, export.pk))
    assert download.status_code == 200
    data = body(download)
    assert hashlib.sha256(data).hexdigest() == export.checksum
    assert "attachment" in download["Content-Disposition"]
    assert f"{DatasetSnapshot.objects.get().name}-merov-csv.zip" in download["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["README.md", "merov.csv"]
        assert archive.read("merov.csv") == b"name,openset\na-clip,['sad']\nb-clip,['calm']\n"


def test_asking_again_reuses_the_export(manager_client, project, verified_clips, django_capture_on_commit_callbacks):
    form = {"snapshot": "", "format": "parquet", "media": "link", "pseudonymise": "on"}
    with django_capture_on_commit_callbacks(execute=True):
        manager_client.post(url("exports", project), form)
    snapshot = DatasetSnapshot.objects.get()
    with django_capture_on_commit_callbacks(execute=True) as sent:
        manager_client.post(url("exports", project), {**form, "snapshot": str(snapshot.pk)})
    assert sent == [] and Export.objects.count() == 1
    response = manager_client.post(url("exports", project), form, follow=True)
    export = Export.objects.get()
    assert [str(m) for m in response.context["messages"]][-1] == f"Export #{export.pk} is ready to download."
    assert Export.objects.get().options["pseudonymise"] is True


def test_bad_requests_show_a_message_and_change_nothing(manager_client, project, manager, verified_clips):
    response = manager_client.post(url("exports", project), {"snapshot": "", "format": "merov-csv",
                                                             "media": "link", "filters": "colour=red"}, follow=True)
    assert next(str(m) for m in response.context["messages"]).startswith("Unknown filter: colour")
    response = manager_client.post(url("exports", project), {"snapshot": "", "format": "xlsx", "media": "link"})
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    other = create_project(name="Other", creator=manager)
    verified_other = DatasetSnapshot.objects.create(project=other, name="other-snap", content_hash="f" * 64)
    response = manager_client.post(url("exports", project), {"snapshot": str(verified_other.pk),
                                                             "format": "merov-csv", "media": "link"})
    assert response.status_code == 400  # not one of this project's snapshots
    assert not Export.objects.exists()


def test_the_filters_field_is_filled_from_the_clip_lists_address(manager_client, project):
    page = manager_client.get(url("exports", project) + "?split=train&label=calm&order=new&colour=red")
    assert b'value="split=train&amp;label=calm"' in page.content


def test_the_live_fragment_polls_while_an_export_builds(manager_client, project, verified_clips):
    snapshot = snapshots.freeze(project)
    Export.objects.create(snapshot=snapshot, format="parquet", options_hash="a" * 64, status="running", progress=0.4,
                          error="")
    fragment = manager_client.get(url("exports-live", project))
    html = fragment.content.decode()
    assert fragment.status_code == 200 and 'hx-trigger="every 2s"' in html
    assert 'value="40"' in html and "parquet" in html and "Download" not in html


def test_text_is_escaped(manager_client, project, verified_clips, django_capture_on_commit_callbacks):
    snapshot = snapshots.freeze(project, name=HOSTILE)
    Export.objects.create(snapshot=snapshot, format="merov_csv", options_hash="b" * 64, status="failed",
                          error=HOSTILE, options={"filters": {"name": HOSTILE}, "media": "link"})
    html = manager_client.get(url("exports", project)).content.decode()
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.parametrize("who", ["annotator", "reviewer", "outsider", "other_manager"])
def test_only_the_projects_managers_see_the_page_and_download(client, project, manager, annotator, outsider,
                                                              django_user_model, verified_clips, who,
                                                              django_capture_on_commit_callbacks):
    export = done_export(project, capture=django_capture_on_commit_callbacks)
    users = {"annotator": annotator, "outsider": outsider}
    users["reviewer"] = django_user_model.objects.create_user("rex2", password="pw-rex-12345")
    set_membership(project=project, user=users["reviewer"], role=Role.REVIEWER)
    users["other_manager"] = django_user_model.objects.create_user("olga", password="pw-olga-12345")
    other = create_project(name="Elsewhere", creator=users["other_manager"])
    assert other.memberships.get(user=users["other_manager"]).role == Role.MANAGER
    client.force_login(users[who])

    assert client.get(url("exports", project)).status_code == 404
    assert client.get(url("exports-live", project)).status_code == 404
    assert client.get(url("export-download", project, export.pk)).status_code == 404
    assert client.post(url("exports", project), {"format": "merov-csv", "media": "link"}).status_code == 404
    # Their own project's address does not reach this project's export either.
    if who == "other_manager":
        assert client.get(url("export-download", other, export.pk)).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(client, project):
    response = client.get(url("exports", project))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_expired_and_unfinished_exports_are_gone(manager_client, project, verified_clips,
                                                 django_capture_on_commit_callbacks):
    export = done_export(project, capture=django_capture_on_commit_callbacks)
    download = url("export-download", project, export.pk)
    assert manager_client.get(download).status_code == 200

    # Past its expiry but not yet swept by beat: refused all the same.
    Export.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert manager_client.get(download).status_code == 410
    assert exports.expire_exports() == 1
    response = manager_client.get(download)
    assert response.status_code == 410 and b"Request it again" in response.content

    queued = Export.objects.create(snapshot=export.snapshot, format="parquet", options_hash="c" * 64)
    assert manager_client.get(url("export-download", project, queued.pk)).status_code == 410
    assert manager_client.get(url("export-download", project, 999_999)).status_code == 404


def test_the_project_page_links_the_exports_for_managers_only(client, project, manager, annotator):
    client.force_login(manager)
    assert url("exports", project).encode() in client.get(reverse("annotations:project-detail",
                                                                  args=[project.slug])).content
    client.force_login(annotator)
    assert url("exports", project).encode() not in client.get(reverse("annotations:project-detail",
                                                                      args=[project.slug])).content


def test_the_downloaded_csv_reads_back(manager_client, project, verified_clips, tmp_path,
                                       django_capture_on_commit_callbacks):
    export = done_export(project, capture=django_capture_on_commit_callbacks)
    with zipfile.ZipFile(io.BytesIO(body(manager_client.get(url("export-download", project, export.pk))))) as z:
        (tmp_path / "merov.csv").write_bytes(z.read("merov.csv"))
    assert read_label_csv(tmp_path / "merov.csv") == {"a-clip": ["sad"], "b-clip": ["calm"], "c-clip": ["angry"]}


def test_the_admin_shows_exports_read_only(client, django_user_model, project, verified_clips,
                                           django_capture_on_commit_callbacks):
    export = done_export(project, capture=django_capture_on_commit_callbacks)
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(root)
    page = client.get(reverse("admin:annotations_export_change", args=[export.pk])).content.decode()
    assert export.checksum in page and 'name="checksum"' not in page and 'name="status"' not in page
    assert client.get(reverse("admin:annotations_export_add")).status_code == 403
    listing = client.get(reverse("admin:annotations_export_changelist")).content.decode()
    assert f"/admin/annotations/export/{export.pk}/change/" in listing
