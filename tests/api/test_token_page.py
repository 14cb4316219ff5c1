"""The web page where a logged-in user makes and revokes their own API tokens."""

import re

import pytest
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_create_use_and_revoke_a_token_from_the_page(client, project, annotator, manager):
    client.force_login(annotator)
    page = client.get("/api/tokens/")
    assert page.status_code == 200 and "You have no tokens." in page.content.decode()
    assert 'href="/api/tokens/"' in client.get("/").content.decode()  # the link in the top bar
    created = client.post("/api/tokens/", {"action": "create"})
    token = re.search(r'<code id="new-token"[^>]*>([^<]+)</code>', created.content.decode()).group(1)
    row = AuthToken.objects.get(user=annotator)
    assert token not in client.get("/api/tokens/").content.decode()  # shown once
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/projects/").status_code == 200
    # another user's token cannot be revoked from here
    other = AuthToken.objects.create(user=manager)[0]
    client.post("/api/tokens/", {"action": "revoke", "key": other.token_key})
    assert AuthToken.objects.filter(pk=other.pk).exists()
    client.post("/api/tokens/", {"action": "revoke", "key": row.token_key})
    assert not AuthToken.objects.filter(user=annotator).exists()
    assert api.get("/api/v1/projects/").status_code == 401


def test_revoke_all_and_login_required(client, annotator):
    assert client.get("/api/tokens/").status_code == 302
    for _ in range(2):
        AuthToken.objects.create(user=annotator)
    client.force_login(annotator)
    client.post("/api/tokens/", {"action": "revoke-all"})
    assert not AuthToken.objects.filter(user=annotator).exists()


def test_the_page_needs_csrf(project, annotator):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    assert client.post("/api/tokens/", {"action": "create"}).status_code == 403
    assert not AuthToken.objects.exists()
