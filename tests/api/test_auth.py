"""Tokens: issued for a password (axes and the login throttle watching), stored hashed, expiring, revocable;
the session works too, with CSRF on writes."""

from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login/"


def login(client, username, password, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, format="json", **extra)


def with_token(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_login_gives_a_token_that_is_stored_hashed_and_expires(project, annotator, settings):
    response = login(APIClient(), "alice", "pw-alice-123")
    assert response.status_code == 200
    token = response.json()["token"]
    assert token.startswith("afl_")
    row = AuthToken.objects.get(user=annotator)
    assert token not in (row.digest, row.token_key) and len(row.digest) == 128  # a sha512 digest, not the token
    days = (row.expiry - timezone.now()) / timedelta(days=1)
    assert 29.9 < days <= 30  # REST_KNOX TOKEN_TTL: AFFECTLOOP_API_TOKEN_DAYS, 30 by default
    assert with_token(token).get("/api/v1/projects/").status_code == 200


def test_wrong_password_is_401_and_axes_locks_the_account(project, annotator, settings):
    settings.AXES_FAILURE_LIMIT = 2
    client = APIClient()
    assert login(client, "alice", "wrong").status_code == 401
    assert login(client, "alice", "wrong").status_code in (403, 429)  # the second failure locks
    # locked: even the right password is refused now
    locked = login(client, "alice", "pw-alice-123")
    assert locked.status_code in (403, 429)
    assert not AuthToken.objects.filter(user=annotator).exists()


def test_no_token_while_the_password_must_be_changed(project, annotator):
    from annotations.accounts import require_password_change

    require_password_change(annotator)
    response = login(APIClient(), "alice", "pw-alice-123")
    assert response.status_code == 403 and "Change your password" in response.json()["error"]
    assert not AuthToken.objects.filter(user=annotator).exists()


def test_login_is_throttled(project, annotator, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    # The rates are read once, when DRF loads: patch the class's copy for this test.
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {**ScopedRateThrottle.THROTTLE_RATES, "login": "2/min"})
    client = APIClient()
    assert [login(client, "alice", "pw-alice-123").status_code for _ in range(3)] == [200, 200, 429]


def test_an_expired_token_is_refused_and_removed(project, annotator):
    row, token = AuthToken.objects.create(user=annotator)
    AuthToken.objects.filter(pk=row.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    assert with_token(token).get("/api/v1/projects/").status_code == 401
    assert not AuthToken.objects.filter(pk=row.pk).exists()


def test_logout_revokes_this_token_and_logout_all_every_token(project, annotator):
    first, second, third = (AuthToken.objects.create(user=annotator)[1] for _ in range(3))
    assert with_token(first).post("/api/v1/auth/logout/").status_code == 204
    assert with_token(first).get("/api/v1/projects/").status_code == 401
    assert with_token(second).get("/api/v1/projects/").status_code == 200
    assert with_token(second).post("/api/v1/auth/logout-all/").status_code == 204
    assert with_token(second).get("/api/v1/projects/").status_code == 401
    assert with_token(third).get("/api/v1/projects/").status_code == 401
    assert not AuthToken.objects.filter(user=annotator).exists()


def test_a_token_of_an_inactive_user_is_refused(project, annotator):
    token = AuthToken.objects.create(user=annotator)[1]
    annotator.is_active = False
    annotator.save()
    assert with_token(token).get("/api/v1/projects/").status_code == 401


def test_the_session_works_and_needs_csrf_for_writes(project, annotator):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(annotator)
    assert client.get("/api/v1/projects/").status_code == 200
    refused = client.post(f"/api/v1/projects/{project.slug}/vocabulary/", {"word": "smug"}, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
