"""Accounts: login throttling, password rules, the forced first change, and who sees which users."""

import os
import stat

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from annotations.models import AccountFlags, AuditEvent, Membership, Role
from annotations.services.projects import MANAGERS_GROUP, create_project, remove_membership, set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttle():
    from axes.utils import reset

    reset()
    yield
    reset()


def login(client, username, password, url=None, **extra):
    url = url or reverse("login")
    return client.post(url, {"username": username, "password": password}, **extra)


def test_forty_wrong_passwords_then_the_right_one_is_refused(client, manager, settings):
    for _ in range(40):
        response = login(client, "maria", "wrong-password")
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    response = login(client, "maria", "pw-maria-123")
    assert response.status_code == 429 and "_auth_user_id" not in client.session


def test_the_limit_counts_from_the_first_failure(client, manager, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "maria", "wrong-password").status_code == 200
    assert login(client, "maria", "pw-maria-123").status_code == 302  # still under the limit: logs in


def test_the_admin_login_is_throttled_too(client, django_user_model):
    django_user_model.objects.create_superuser("root", password="pw-root-12345")
    url = reverse("admin:login")
    for _ in range(10):
        login(client, "root", "wrong", url=url)
    response = login(client, "root", "pw-root-12345", url=url)
    assert response.status_code == 429 and "_auth_user_id" not in client.session


def test_behind_a_proxy_clients_are_told_apart_by_the_forwarded_address(client, manager, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for _ in range(10):
        login(client, "maria", "wrong", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert login(client, "maria", "pw-maria-123", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    # A forged left-most entry does not help: the proxy appends the address it saw on the right.
    assert login(client, "maria", "pw-maria-123",
                 HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7").status_code == 429
    assert login(client, "maria", "pw-maria-123", HTTP_X_FORWARDED_FOR="198.51.100.9").status_code == 302


def test_passwords_need_twelve_characters():
    with pytest.raises(ValidationError, match="at least 12 characters"):
        validate_password("Tr0ub4dor&3")
    validate_password("correct horse battery")


def test_bootstrap_password_file_is_private_and_the_first_login_asks_for_a_new_password(client, settings,
                                                                                         tmp_path):
    settings.DATA_DIR = tmp_path
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("bootstrap", admin="boss", verbosity=0)
    password_file = tmp_path / "admin-password.txt"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    user, password = password_file.read_text().splitlines()[:2]

    response = login(client, user, password, follow=True)
    assert response.redirect_chain[-1][0] == reverse("password-change")
    for url in (reverse("annotations:project-list"), reverse("admin:index")):
        assert client.get(url)["Location"] == reverse("password-change")
    page = client.get(reverse("password-change"))
    assert "Choose your own to continue" in page.content.decode()
    short = client.post(reverse("password-change"), {"old_password": password, "new_password1": "short-1",
                                                     "new_password2": "short-1"})
    assert "at least 12 characters" in short.content.decode()
    new = "a fresh and long one"
    done = client.post(reverse("password-change"), {"old_password": password, "new_password1": new,
                                                    "new_password2": new})
    assert done.status_code == 302
    assert client.get(reverse("annotations:project-list")).status_code == 200
    assert not AccountFlags.objects.get(user__username="boss").must_change_password
    assert AuditEvent.objects.filter(action="account.password_changed").exists()


def test_bootstrap_tightens_an_old_password_file(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    settings.STATIC_ROOT = tmp_path / "static"
    password_file = tmp_path / "admin-password.txt"
    password_file.write_text("old\nfile\n")
    os.chmod(password_file, 0o644)
    call_command("bootstrap", verbosity=0)  # creates the admin: the file is rewritten
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    os.chmod(password_file, 0o644)
    call_command("bootstrap", verbosity=0)  # the admin exists: the file is left, but made private
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600


def test_a_user_made_in_the_admin_must_change_the_admins_password(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(root)
    response = client.post(reverse("admin:auth_user_add"), {"username": "newbie", "password1": "given by root 1",
                                                            "password2": "given by root 1",
                                                            "usable_password": "true"})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert AccountFlags.objects.get(user__username="newbie").must_change_password


# --- who a manager sees -----------------------------------------------------------------------------------
@pytest.fixture
def other_project(django_user_model):
    owner = django_user_model.objects.create_user("olga", password="pw-olga-12345")
    project = create_project(name="Elsewhere", creator=owner)
    stranger = django_user_model.objects.create_user("sam", password="pw-sam-123456")
    set_membership(project=project, user=stranger, role=Role.ANNOTATOR)
    return project


def test_a_manager_sees_only_co_members(client, project, manager, other_project, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(manager)
    page = client.get(reverse("admin:auth_user_changelist")).content.decode()
    assert "alice" in page and "maria" in page
    assert "sam" not in page and "olga" not in page and "root" not in page
    assert "superuser status" not in page.lower()  # no filter to find the superusers with
    response = client.get(reverse("admin:auth_user_change", args=[root.pk]))
    assert response.status_code == 302  # the admin's "does not exist" redirect
    auto = client.get(reverse("admin:autocomplete"), {"app_label": "annotations", "model_name": "membership",
                                                     "field_name": "user", "term": ""})
    assert auto.status_code == 200
    assert {r["text"] for r in auto.json()["results"]} == {"maria", "alice"}


def test_a_manager_adds_a_member_by_exact_username(client, project, manager, other_project, django_user_model):
    client.force_login(manager)
    url = reverse("admin:annotations_membership_add")
    assert 'name="user"' in client.get(url).content.decode()
    response = client.post(url, {"project": project.pk, "user": "sam", "role": "annotator"})
    assert response.status_code == 302
    assert Membership.objects.filter(project=project, user__username="sam").exists()
    # No such user and a user a manager may not pick (a superuser) get the same answer: nothing to tell apart.
    django_user_model.objects.create_superuser("root", password="pw-root-12345")
    for name in ("nobody-like-this", "root"):
        wrong = client.post(url, {"project": project.pk, "user": name, "role": "annotator"})
        assert wrong.status_code == 200 and "No user by that name that you can choose here." in wrong.content.decode()
    assert not Membership.objects.filter(user__username="root").exists()


def test_losing_the_last_manager_role_takes_back_admin_access(project, manager, django_user_model):
    second = create_project(name="Second", creator=manager)
    set_membership(project=project, user=manager, role=Role.ANNOTATOR)
    manager.refresh_from_db()
    assert manager.is_staff  # still manages "Second"
    remove_membership(project=second, user=manager)
    manager.refresh_from_db()
    assert not manager.is_staff and not manager.groups.filter(name=MANAGERS_GROUP).exists()
    assert AuditEvent.objects.filter(action="account.admin_revoked", object_id=str(manager.pk)).exists()


def test_a_superuser_keeps_staff_when_demoted(project, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    set_membership(project=project, user=root, role=Role.MANAGER)
    set_membership(project=project, user=root, role=Role.ANNOTATOR)
    root.refresh_from_db()
    assert root.is_staff and root.is_superuser


def test_the_new_password_must_differ_from_the_given_one(client, manager):
    client.force_login(manager)
    response = client.post(reverse("password-change"), {"old_password": "pw-maria-123",
                                                        "new_password1": "pw-maria-123", "new_password2": "pw-maria-123"})
    assert "Choose a password different from the current one." in response.content.decode()


def test_a_password_a_superuser_sets_for_someone_else_must_be_replaced(client, manager, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(root)
    response = client.post(reverse("admin:auth_user_password_change", args=[manager.pk]),
                           {"password1": "reset by the admin", "password2": "reset by the admin",
                            "usable_password": "true"})
    assert response.status_code == 302
    assert AccountFlags.objects.get(user=manager).must_change_password


@pytest.mark.django_db(transaction=True)  # the real WSGI handler closes the connection after each request
def test_the_forced_change_works_under_a_url_prefix(client, manager, settings):
    """Behind a mount prefix (SCRIPT_NAME), reverse() carries it and path_info does not: no redirect loop."""
    from annotations.accounts import require_password_change

    import io

    from django.core.handlers.wsgi import WSGIHandler

    require_password_change(manager)
    login(client, "maria", "pw-maria-123")
    # nginx's auth subrequest for a session that must change its password: refused, not redirected (→ 500)
    assert client.post(reverse("upload-gate"), HTTP_X_ORIGINAL_URI="/p/x/upload/").status_code == 403
    cookies = "; ".join(f"{k}={v.value}" for k, v in client.cookies.items())

    def get(path):  # Django's real WSGI handler sets the script prefix; the test client does not
        out = {}
        environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/affectloop", "PATH_INFO": path, "QUERY_STRING": "",
                   "SERVER_NAME": "localhost", "SERVER_PORT": "80", "HTTP_HOST": "localhost", "HTTP_COOKIE": cookies,
                   "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http"}
        body = b"".join(WSGIHandler()(environ, lambda status, headers: out.update(status=status,
                                                                                 headers=dict(headers))))
        return int(out["status"].split()[0]), out["headers"], body.decode()

    from django.urls import set_script_prefix

    try:
        status, _, body = get("/accounts/password/")
        assert status == 200 and "Change password" in body
        status, headers, _ = get("/")
        assert status == 302 and headers["Location"] == "/affectloop/accounts/password/"
    finally:
        set_script_prefix("/")  # the handler set it for this thread
