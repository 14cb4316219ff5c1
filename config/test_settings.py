"""Settings for the test suite.

Unit tests run Celery tasks eagerly on the in-memory transport; tests that need a real worker turn eager
mode off for their duration (tests/conftest.py), and a real broker is used when CELERY_BROKER_URL names one
(CI sets Redis). DATABASE_URL selects PostgreSQL the same way.
"""

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-" + "x" * 40)
os.environ.setdefault("AFFECTLOOP_DATA_DIR", tempfile.mkdtemp(prefix="affectloop-test-"))
os.environ.setdefault("CELERY_BROKER_URL", "memory://")

from .settings import *  # noqa: E402,F403

STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  (whitenoise warns about a missing folder)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; never used outside tests
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = "cache+memory://"
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not :memory:, so that worker subprocesses started by integration tests see the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
AUDIT_PURGE_ALLOWED = True  # lets Django's flush between transactional tests empty the audit table
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    # The same for PostgreSQL, whose flush uses TRUNCATE: the audit table's truncate trigger (migration 0006)
    # allows it only where this setting is on. Applies to every connection, the test database's creation too.
    _options = DATABASES["default"].setdefault("OPTIONS", {})  # noqa: F405
    _options["options"] = f"{_options.get('options', '')} -c affectloop.audit_purge=on".strip()

