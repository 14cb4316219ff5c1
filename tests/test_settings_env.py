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


def run_code(tmp_path, code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AFFECTLOOP_", "REDIS_"))
            and k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    base.update({"DJANGO_SETTINGS_MODULE": "config.settings", "AFFECTLOOP_DATA_DIR": str(tmp_path),
                 "DJANGO_SECRET_KEY": GOOD_KEY, **env})
    return subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=60)


def test_the_data_directory_is_private(tmp_path):
    fresh = tmp_path / "new" / "data"
    assert run_code(fresh, "", ).returncode == 0
    assert (fresh.stat().st_mode & 0o777) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    assert run_code(old, "").returncode == 0
    assert (old.stat().st_mode & 0o777) == 0o700  # an older release's world-readable folder is tightened


def test_the_redis_password_comes_from_a_file_into_broker_and_cache(tmp_path):
    (tmp_path / "redis_pw").write_text("p@ss/word\n")
    code = ("from django.conf import settings as s; print(s.CELERY_BROKER_URL); "
            "print(s.CACHES['default']['LOCATION']); print(s.AXES_HANDLER)")
    result = run_code(tmp_path, code, CELERY_BROKER_URL="redis://redis:6379/0",
                      AFFECTLOOP_CACHE_URL="redis://redis:6379/1", REDIS_PASSWORD_FILE=str(tmp_path / "redis_pw"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis://:p%40ss%2Fword@redis:6379/0", "redis://:p%40ss%2Fword@redis:6379/1",
                                     "axes.handlers.cache.AxesCacheHandler"]
    embedded = run_code(tmp_path, "from django.conf import settings as s; print(s.AXES_HANDLER)")
    assert embedded.stdout.strip() == "axes.handlers.database.AxesDatabaseHandler"  # no shared cache: the DB
    bad = run_code(tmp_path, "", AFFECTLOOP_CACHE_URL="memcached://x")
    assert bad.returncode != 0 and "AFFECTLOOP_CACHE_URL" in bad.stderr


def test_the_debug_page_shows_no_credentials(tmp_path):
    """The debug page listed DATABASE_URL and CELERY_BROKER_URL with their passwords."""
    code = """
import sys
from django.conf import settings as s
from django.test import RequestFactory
from django.views.debug import technical_500_response
assert not hasattr(s, "DATABASE_URL"), "the raw database URL is a setting"
request = RequestFactory().get("/", HTTP_X_PROBE="postgres://app:env/p@ss@db/x",
                               HTTP_X_QUERY="postgres://db/x?sslmode=require&password=querypass")
try:
    raise RuntimeError("boom")
except RuntimeError:
    page = technical_500_response(request, *sys.exc_info()).content.decode()
print("dbpass" in page, "brokerpass" in page, "env/p" in page, "querypass" in page, "boom" in page)
"""
    result = run_code(tmp_path, code, DJANGO_DEBUG="true", DATABASE_URL="postgres://app:dbpass@db:5432/x",
                      CELERY_BROKER_URL="redis://:brokerpass@redis:6379/0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False", "False", "False", "True"]
