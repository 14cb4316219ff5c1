"""gunicorn settings for the `web` service.

Run as `gunicorn -c platform/gunicorn.conf.py config.wsgi:application`; every number can be changed
from the environment without rebuilding the image.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")

# A fixed default rather than one from the CPU count: inside a container that count is the host's.
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Threads keep a worker answering autosaves while another request waits on the database.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# nginx buffers a whole upload before passing it on, so this covers hashing and storing a 500 MB clip,
# not the client's upload time.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# Restart workers now and then to cap slow memory growth; the jitter keeps them from restarting together.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = 100

# Worker heartbeats on tmpfs: on a container's overlay filesystem a slow write can get a healthy
# worker killed as unresponsive.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # `make run` on a Mac has none

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("AFFECTLOOP_LOG_LEVEL", "info").lower()
access_log_format = '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
# AFFECTLOOP_LOG_FORMAT=json: gunicorn's own lines (start-up, errors, the access log) as JSON objects too,
# like the app's (config/settings.py). propagate off: the app's root handler would print them again.
if os.environ.get("AFFECTLOOP_LOG_FORMAT", "text").strip().lower() == "json":
    logconfig_dict = {
        "loggers": {
            "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "formatters": {
            "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                     "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                     "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
        },
    }

# Whose X-Forwarded-* headers gunicorn trusts: loopback unless told. docker-compose.yml sets the subnet
# of the network that only nginx and web share; "*" would let any container on a shared network claim
# https.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# No gunicornc control socket (gunicorn 25.1+): nothing here uses it, and the container's root is
# read-only. Older versions ignore the unknown name.
control_socket_disable = True


# Prometheus multiprocess mode: each worker writes its django-prometheus metrics to files in one folder and
# /metrics, answered by any worker, adds them all up (annotations/metrics.py). Set in the master before any
# worker imports prometheus_client; a folder left by an earlier run would add old counts to the new ones.
def _metrics_dir() -> str:
    data_dir = os.environ.get("AFFECTLOOP_DATA_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var")
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(data_dir, "prometheus")


def on_starting(server):
    folder = _metrics_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder


def child_exit(server, worker):
    # Drops the dead worker's live gauges; its counters stay, so totals never go down.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
