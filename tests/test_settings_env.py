"""Settings come from the environment and bad values stop start-up with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "k" * 50


def load_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "AFFECTLOOP_")) and k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    base.update({"DJANGO_SETTINGS_MODULE": "config.settings", "AFFECTLOOP_DATA_DIR": str(tmp_path)})
    base.update(env)
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.SESSION_COOKIE_SECURE)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True,
                          timeout=60)


def test_no_secret_key_is_a_startup_error(tmp_path):
    result = load_settings(tmp_path)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


def test_the_data_directory_key_file_is_used_when_no_key_is_given(tmp_path):
    """`make run` writes var/secret_key; the README's management commands run beside it with no variable."""
    (tmp_path / "secret_key").write_text(GOOD_KEY + "\n")
    code = "import django; django.setup(); from django.conf import settings as s; print(s.SECRET_KEY)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AFFECTLOOP_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "AFFECTLOOP_DATA_DIR": str(tmp_path)})
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == GOOD_KEY
    (tmp_path / "secret_key").write_text("short\n")
    assert "too short" in load_settings(tmp_path).stderr  # the same checks as any other key


def test_embedded_defaults_debug_off_sqlite_filesystem_broker(tmp_path):
    result = load_settings(tmp_path, DJANGO_SECRET_KEY=GOOD_KEY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "django.db.backends.sqlite3", "filesystem://", "False"]
    assert tmp_path.is_dir()


def test_secret_key_file(tmp_path):
    key = tmp_path / "key"
    key.write_text(GOOD_KEY + "\n")
    assert load_settings(tmp_path, DJANGO_SECRET_KEY_FILE=str(key)).returncode == 0
    both = load_settings(tmp_path, DJANGO_SECRET_KEY_FILE=str(key), DJANGO_SECRET_KEY=GOOD_KEY)
    assert both.returncode != 0 and "not both" in both.stderr
    missing = load_settings(tmp_path, DJANGO_SECRET_KEY_FILE=str(tmp_path / "nope"))
    assert missing.returncode != 0 and "cannot be read" in missing.stderr


@pytest.mark.parametrize("env,needle", [
    ({"DJANGO_DEBUG": "ture"}, "DJANGO_DEBUG='ture' is not a boolean"),
    ({"DJANGO_SECRET_KEY": "short"}, "too short"),
    ({"DATABASE_URL": "mysql://root@localhost/x"}, "not supported"),
    ({"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
    ({"CELERY_BROKER_URL": "sqs://x"}, "CELERY_BROKER_URL scheme not supported"),
    ({"AFFECTLOOP_MAX_UPLOAD_MB": "lots"}, "AFFECTLOOP_MAX_UPLOAD_MB='lots' is not an integer"),
    ({"AFFECTLOOP_MAX_CLIP_SECONDS": "-3"}, "must be at least"),
    ({"AFFECTLOOP_MEDIA_ACCEL_PREFIX": "protected"}, "AFFECTLOOP_MEDIA_ACCEL_PREFIX"),
    ({"AFFECTLOOP_LOG_LEVEL": "LOUD"}, "AFFECTLOOP_LOG_LEVEL"),
])
def test_bad_values_fail_loudly(tmp_path, env, needle):
    env = {"DJANGO_SECRET_KEY": GOOD_KEY, **env}
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr[-800:]


def test_switches_to_postgres_and_redis_and_https(tmp_path):
    result = load_settings(tmp_path, DJANGO_SECRET_KEY=GOOD_KEY, DJANGO_DEBUG="true", AFFECTLOOP_HTTPS="1",
                           DATABASE_URL="postgres://postgres@127.0.0.1:5432/affectloop",
                           CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "django.db.backends.postgresql", "redis://127.0.0.1:6379/0", "True"]


def test_database_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.DATABASES['default']['PASSWORD'])")
    env = {"DJANGO_SECRET_KEY": GOOD_KEY, "DATABASE_URL": "postgres://app@db:5432/affectloop",
           "DATABASE_PASSWORD_FILE": str(secret)}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AFFECTLOOP_"))
            and k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**base, "DJANGO_SETTINGS_MODULE": "config.settings",
                                 "AFFECTLOOP_DATA_DIR": str(tmp_path), **env})
    assert result.returncode == 0 and result.stdout.strip() == "s3cret", result.stderr[-500:]
    missing = load_settings(tmp_path, **{**env, "DATABASE_PASSWORD_FILE": str(tmp_path / "nope")})
    assert missing.returncode != 0 and "DATABASE_PASSWORD_FILE cannot be read" in missing.stderr
