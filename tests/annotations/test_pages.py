"""Site-wide pages: errors in the site's style, the favicon, the members page."""

import pytest

pytestmark = pytest.mark.django_db


def test_error_pages_are_in_the_sites_style_and_there_is_a_favicon(client, annotator):
    from django.template.loader import render_to_string

    client.force_login(annotator)
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    html = missing.content.decode()
    assert "Not found" in html and "app.css" in html and "favicon.svg" in html
    server_error = render_to_string("500.html")
    assert "Something went wrong" in server_error and "app.css" in server_error
    icon = client.get("/favicon.ico")
    assert icon.status_code == 301 and icon["Location"].endswith("favicon.svg")


def test_managers_run_membership_from_the_members_page(client, project, manager, annotator, outsider,
                                                       django_user_model):
    from django.urls import reverse

    from annotations.models import AuditEvent, Membership

    url = reverse("annotations:members", args=[project.slug])
    client.force_login(annotator)
    assert client.get(url).status_code == 404  # annotators do not manage
    client.force_login(manager)
    page = client.get(url).content.decode()
    assert "alice" in page and "maria" in page
    response = client.post(url, {"username": "oscar", "role": "reviewer", "trusted": "on"})
    assert response.status_code == 302
    m = Membership.objects.get(project=project, user=outsider)
    assert m.role == "reviewer" and m.trusted
    assert AuditEvent.objects.filter(action="membership.set", changes__user="oscar").exists()
    django_user_model.objects.create_superuser("root", password="pw-root-12345")
    for name in ("root", "nobody"):
        page = client.post(url, {"username": name, "role": "annotator"}).content.decode()
        assert "No user by that name that you can add." in page
    client.post(url, {"action": "remove", "membership": m.pk})
    assert not Membership.objects.filter(project=project, user=outsider).exists()
    own = Membership.objects.get(project=project, user=manager)
    client.post(url, {"action": "remove", "membership": own.pk})
    assert Membership.objects.filter(pk=own.pk).exists()  # never removes oneself
    client.post(url, {"username": "maria", "role": "annotator"})
    own.refresh_from_db()
    assert own.role == "manager"  # nor demotes oneself
