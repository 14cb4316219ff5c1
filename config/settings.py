"""Affectloop settings: everything comes from the environment and bad values stop start-up.

The embedded default (no servers) is SQLite in WAL mode plus Celery's filesystem broker, all under one
data directory, AFFECTLOOP_DATA_DIR. DATABASE_URL and CELERY_BROKER_URL switch to PostgreSQL and
Redis/RabbitMQ. The README lists every variable.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_list, env_str, read_secret_file, secret_key, with_password

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("AFFECTLOOP_DATA_DIR", str(BASE_DIR / "var"))).resolve()
if not DATA_DIR.exists():
    # Private from the start: it holds the SQLite database (sessions, password hashes) and the secret key.
    DATA_DIR.mkdir(parents=True, mode=0o700)
    DATA_DIR.chmod(0o700)  # mkdir's mode is filtered by the umask, which may be looser
elif DATA_DIR.stat().st_uid == os.getuid() and DATA_DIR.stat().st_mode & 0o077:
    try:
        DATA_DIR.chmod(0o700)  # one made by an older release, open to other local users
    except OSError:
        pass  # a read-only root (the compose images make /data 0700 themselves)

SECRET_KEY = secret_key(DATA_DIR / "secret_key")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from our static files (no CDN)
    "knox",  # API tokens: stored hashed, expiring, revocable
    "django_celery_beat",
    "django_celery_results",
    "axes",
    "django_htmx",
    "csp",
    "django_prometheus",  # /metrics: request, response and latency metrics (annotations/metrics.py)
    "annotations",
]

MIDDLEWARE = [
    # First and last: django-prometheus times and counts everything in between.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # An API token's user, known before the upload route's body gate (next) decides on request.user.
    "annotations.api.auth.TokenUserMiddleware",
    # Before any view middleware (CSRF parses POST bodies): refuses oversized or unauthorised bodies unread.
    "annotations.request_limits.RequestBodyLimitMiddleware",
    "annotations.accounts.PasswordChangeRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- database -------------------------------------------------------------------------------------
def _database(url: str) -> dict:
    try:
        db = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if db["ENGINE"] == "django.db.backends.sqlite3":
        if db["NAME"] and db["NAME"] != ":memory:":
            Path(db["NAME"]).parent.mkdir(parents=True, exist_ok=True)  # first use creates the data dir
        db["CONN_MAX_AGE"] = 0
        # WAL lets the web server read while a worker writes; IMMEDIATE takes the write lock at BEGIN so
        # concurrent writers queue on busy_timeout instead of failing with "database is locked".
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        }
    elif db["ENGINE"] not in ("django.db.backends.postgresql",):
        raise ImproperlyConfigured(f"DATABASE_URL engine {db['ENGINE']} is not supported (use sqlite or postgres)")
    return db


# Lower case: not a setting, so the raw URL (and any password in it) never reaches the debug page.
database_url = env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'affectloop.sqlite3'}"
DATABASES = {"default": _database(database_url)}
del database_url
# Docker secrets: the password in a file, so it is neither in the URL nor in `docker inspect`.
if env_str("DATABASE_PASSWORD_FILE"):
    DATABASES["default"]["PASSWORD"] = read_secret_file("DATABASE_PASSWORD_FILE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MIGRATION_MODULES = {"annotations": "migrations"}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "annotations:project-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("AFFECTLOOP_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- files ----------------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("AFFECTLOOP_STATIC_ROOT", str(DATA_DIR / "static")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("AFFECTLOOP_MEDIA_ROOT", str(DATA_DIR / "media")))
# Model files (base models, adapters, checkpoints): registry and config paths are relative to it. Only the
# processes that load models (GPU and training workers, `register_model`, `check_models`) need the files.
MODEL_DIR = Path(env_str("AFFECTLOOP_MODEL_DIR", str(DATA_DIR / "models")))
# Off: every model must be a folder in MODEL_DIR. On: a reference that is not there may be a hub id, which
# the workers download (and run) from the Hugging Face Hub.
ALLOW_HUB_MODELS = env_bool("AFFECTLOOP_ALLOW_HUB_MODELS", False)
# A dataset export's download is removed this many days after it was built (a rebuild makes it again).
EXPORT_DOWNLOAD_DAYS = env_int("AFFECTLOOP_EXPORT_DOWNLOAD_DAYS", 7, minimum=1)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Empty: the app streams media itself (HTTP Range included). Behind nginx set it to the internal
# location, e.g. /protected-media/, and the app answers with X-Accel-Redirect after the membership check.
MEDIA_ACCEL_PREFIX = env_str("AFFECTLOOP_MEDIA_ACCEL_PREFIX", "") or ""
if MEDIA_ACCEL_PREFIX and not (MEDIA_ACCEL_PREFIX.startswith("/") and MEDIA_ACCEL_PREFIX.endswith("/")):
    raise ImproperlyConfigured("AFFECTLOOP_MEDIA_ACCEL_PREFIX must start and end with '/'")

MAX_UPLOAD_BYTES = env_int("AFFECTLOOP_MAX_UPLOAD_MB", 500, minimum=1) * 1024 * 1024
MAX_CLIP_SECONDS = env_float("AFFECTLOOP_MAX_CLIP_SECONDS", 600.0, minimum=0.1)
MAX_CLIP_WIDTH = env_int("AFFECTLOOP_MAX_CLIP_WIDTH", 3840, minimum=16)
MAX_CLIP_HEIGHT = env_int("AFFECTLOOP_MAX_CLIP_HEIGHT", 2160, minimum=16)
# Every other request body: login forms, autosaves, the admin. nginx holds the same number (platform/nginx.conf).
MAX_REQUEST_BYTES = env_int("AFFECTLOOP_MAX_REQUEST_MB", 2, minimum=1) * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "annotations.request_limits.LimitedUploadHandler",  # first: stops a file over the cap before it is written
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
FILE_UPLOAD_PERMISSIONS = 0o640
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o750  # never readable by other local users, whatever the umask
# ffprobe and ffmpeg run under this address-space limit (a crafted file cannot take the host's memory).
MEDIA_TOOL_MEMORY_MB = env_int("AFFECTLOOP_MEDIA_TOOL_MEMORY_MB", 1024, minimum=512)  # ffprobe needs ~300 MB for 4K
DATA_UPLOAD_MAX_NUMBER_FILES = 20  # per request: each file is probed and hashed inside it; use import_clips for bulk

# --- security -------------------------------------------------------------------------------------
HTTPS = env_bool("AFFECTLOOP_HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("AFFECTLOOP_HSTS_SECONDS", 31536000)
    SECURE_SSL_REDIRECT = env_bool("AFFECTLOOP_SSL_REDIRECT", False)
# Scripts only from our own static files: no inline script, no eval, no CDN. Media answers keep their own
# stricter "sandbox" policy (django-csp leaves a header that is already set).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],  # style attributes (the admin's); never script
        "img-src": ["'self'", "data:"],
        "media-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
# The debug page masks passwords inside URL-valued settings (the broker URL, cache locations).
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.security.SafeReporterFilter"

# Login throttling (django-axes): failures counted per username and client address, in the shared cache
# (Redis, AFFECTLOOP_CACHE_URL) or, in the embedded default, the database that every process shares.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("AFFECTLOOP_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AFFECTLOOP_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "config.security.client_ip"
AXES_VERBOSE = False
# How many proxies append to X-Forwarded-For in front of the app (compose: nginx = 1). 0: REMOTE_ADDR.
TRUSTED_PROXY_COUNT = env_int("AFFECTLOOP_TRUSTED_PROXY_COUNT", 0)

# --- cache ----------------------------------------------------------------------------------------
# Shared by every process: login throttling must count failures across gunicorn workers. A folder in the
# data dir for the embedded default (one host); Redis in production.
redis_password = read_secret_file("REDIS_PASSWORD_FILE") if env_str("REDIS_PASSWORD_FILE") else ""
cache_url = env_str("AFFECTLOOP_CACHE_URL", "") or ""
if cache_url.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": with_password(cache_url, redis_password)}}
    AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
elif cache_url:
    raise ImproperlyConfigured("AFFECTLOOP_CACHE_URL must be a redis:// or rediss:// URL (or unset)")
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(DATA_DIR / "cache")}}
    # A file cache cannot count atomically across processes; the database can.
    AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
del cache_url

# --- celery ---------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_URL = with_password(CELERY_BROKER_URL, redis_password)
del redis_password
BROKER_DIR = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Kombu's filesystem transport: producer and consumer must share one folder, and it must exist.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # Kombu polls the folder; its 1 s default caps each worker process at about one task a second.
        "polling_interval": 0.05,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Longer than the slowest task (training chunks), or Redis redelivers it while it still runs.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("AFFECTLOOP_VISIBILITY_TIMEOUT", 4 * 3600)}
elif not CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://", "memory://")):
    raise ImproperlyConfigured(f"CELERY_BROKER_URL scheme not supported: {CELERY_BROKER_URL.split(':', 1)[0]}")
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "django-cache"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Installed into django-celery-beat's tables at beat start-up; editable in the admin afterwards.
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-clips": {"task": "affectloop.media.requeue_stale_clips", "schedule": 300.0},
    "enqueue-prelabel": {"task": "affectloop.prelabel.enqueue", "schedule": 120.0},
    "rescore-priorities": {"task": "affectloop.prelabel.rescore", "schedule": 1800.0},
    "watch-training": {"task": "affectloop.train.watch", "schedule": 300.0},
    "start-due-training": {"task": "affectloop.train.trigger", "schedule": 300.0},
    "enqueue-captions": {"task": "affectloop.captions.enqueue", "schedule": 900.0},
    "expire-exports": {"task": "affectloop.media.expire_exports", "schedule": 3600.0},
    "clean-retired-adapters": {"task": "affectloop.train.clean_adapters", "schedule": 86400.0},
    "refresh-dashboards": {"task": "affectloop.reports.dashboard", "schedule": 900.0},
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "affectloop.media.*": {"queue": "media"},
    "affectloop.gpu.*": {"queue": "gpu"},
    "affectloop.train.*": {"queue": "train"},
    # Torch-free and short: not behind the run it watches on the train worker (exact names win over globs).
    "affectloop.train.watch": {"queue": "default"},
    "affectloop.train.trigger": {"queue": "default"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("AFFECTLOOP_TASK_TIME_LIMIT", 1800, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30 if CELERY_TASK_TIME_LIMIT > 60 else None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE

# --- api ------------------------------------------------------------------------------------------
# Clients send `Authorization: Token <token>` (knox, annotations/api/auth.py); a browser's session works too,
# with its CSRF token on writes. Tokens are stored as sha512 digests, expire after AFFECTLOOP_API_TOKEN_DAYS
# and can be revoked one at a time or all at once.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["knox.auth.TokenAuthentication",
                                       "rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "annotations.api.pagination.Pages",
    "DEFAULT_FILTER_BACKENDS": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser", "rest_framework.parsers.MultiPartParser"],
    # Counted in the shared cache (the `default` cache: Redis in production), so every worker counts together.
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle",
                                 "rest_framework.throttling.UserRateThrottle",
                                 "rest_framework.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("AFFECTLOOP_API_ANON_RATE", "60/min"),
        "user": env_str("AFFECTLOOP_API_USER_RATE", "1200/min"),
        "login": env_str("AFFECTLOOP_API_LOGIN_RATE", "10/min"),
        "upload": env_str("AFFECTLOOP_API_UPLOAD_RATE", "120/min"),
    },
    "EXCEPTION_HANDLER": "annotations.api.views.exception_handler",
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,  # the throttles' client address, as for login throttling
}
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=env_int("AFFECTLOOP_API_TOKEN_DAYS", 30, minimum=1)),
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_PREFIX": "afl_",  # recognisable in logs and secret scanners
    "TOKEN_LIMIT_PER_USER": env_int("AFFECTLOOP_API_TOKENS_PER_USER", 20, minimum=1),
    "AUTO_REFRESH": False,
}
# Clips the API may import by server path must lie under this folder (unset: import by path is off).
API_IMPORT_ROOT = env_str("AFFECTLOOP_IMPORT_ROOT", "") or ""
# Signed media links (annotations/signed_media.py): how long one stays valid.
SIGNED_MEDIA_SECONDS = env_int("AFFECTLOOP_SIGNED_MEDIA_SECONDS", 3600, minimum=1)
# Label Studio (services.labelstudio): its API key is a secret, so never in the project config; signed media
# links sent there are absolute, on this server's public address.
LABEL_STUDIO_API_KEY = (read_secret_file("AFFECTLOOP_LABEL_STUDIO_API_KEY_FILE")
                        if env_str("AFFECTLOOP_LABEL_STUDIO_API_KEY_FILE")
                        else env_str("AFFECTLOOP_LABEL_STUDIO_API_KEY", "") or "")
PUBLIC_BASE_URL = (env_str("AFFECTLOOP_PUBLIC_URL", "") or "").rstrip("/")
if PUBLIC_BASE_URL and not PUBLIC_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("AFFECTLOOP_PUBLIC_URL must be an http(s) URL, e.g. https://affectloop.example.org")
SPECTACULAR_SETTINGS = {
    "TITLE": "Affectloop API",
    "DESCRIPTION": "Projects, clips, predictions, annotations, reviews, vocabulary, model versions, training runs, "
                   "snapshots and exports. Authenticate with `Authorization: Token <token>` (POST /api/v1/auth/login/).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],  # the schema and docs need a login
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from drf-spectacular-sidecar's static files: no CDN, and script-src 'self' is enough.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ClipStatusEnum": "annotations.models.Clip.Status",
        "AnnotationStatusEnum": "annotations.models.Annotation.Status",
        "ModelVersionStatusEnum": "annotations.models.ModelVersion.Status",
        "TrainingRunStatusEnum": "annotations.models.TrainingRun.Status",
        "ExportStatusEnum": "annotations.models.Export.Status",
        "IngestStatusEnum": ["imported", "duplicate", "rejected"],
    },
}

# --- logging ---------------------------------------------------------------------------------------
LOG_LEVEL = (env_str("AFFECTLOOP_LOG_LEVEL", "INFO") or "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"AFFECTLOOP_LOG_LEVEL={LOG_LEVEL!r} is not a log level")
# json: one object per line for a log collector (docker-compose.yml); text for a terminal (`make run`). Both
# carry the running Celery task's id and clip ids (annotations/observability.py).
LOG_FORMAT = (env_str("AFFECTLOOP_LOG_FORMAT", "text") or "text").lower()
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"AFFECTLOOP_LOG_FORMAT={LOG_FORMAT!r} must be text or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"task_context": {"()": "annotations.observability.TaskContextFilter", "style": LOG_FORMAT}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s%(task_context)s"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["task_context"],
                             "formatter": "json" if LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- operations -----------------------------------------------------------------------------------
# /metrics: with a token, `Authorization: Bearer <token>` is required; without one, only a direct request
# from loopback is answered. nginx never passes /metrics on (platform/nginx.conf).
if env_str("AFFECTLOOP_METRICS_TOKEN_FILE"):
    METRICS_TOKEN = read_secret_file("AFFECTLOOP_METRICS_TOKEN_FILE")
else:
    METRICS_TOKEN = env_str("AFFECTLOOP_METRICS_TOKEN", "") or ""
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured("AFFECTLOOP_METRICS_TOKEN must be at least 24 characters")
METRICS_CACHE_SECONDS = env_float("AFFECTLOOP_METRICS_CACHE_SECONDS", 5.0, minimum=0.0)
# Celery workers serve their own metrics (GPU memory and utilisation) on this port when it is set.
WORKER_METRICS_PORT = env_int("AFFECTLOOP_WORKER_METRICS_PORT", 0, minimum=0)
WORKER_METRICS_ADDR = env_str("AFFECTLOOP_WORKER_METRICS_ADDR", "127.0.0.1") or "127.0.0.1"


def _tool_url(name: str) -> str:
    url = env_str(name, "") or ""
    if url and not url.startswith(("https://", "http://")):
        raise ImproperlyConfigured(f"{name} must be an http(s) URL")
    return url


# Links on the project page for managers; empty: not shown.
FLOWER_URL = _tool_url("AFFECTLOOP_FLOWER_URL")
PROMETHEUS_URL = _tool_url("AFFECTLOOP_PROMETHEUS_URL")
GRAFANA_URL = _tool_url("AFFECTLOOP_GRAFANA_URL")
