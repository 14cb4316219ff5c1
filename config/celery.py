import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("affectloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Task ids and clip ids on log lines, the heartbeat behind the compose health checks, GPU workers' metrics.
import annotations.observability  # noqa: E402,F401  (connects its signal handlers)


@app.on_after_configure.connect
def _make_broker_folders(sender, **kwargs):
    # The filesystem transport fails on a missing folder instead of creating it.
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            os.makedirs(options[key], exist_ok=True)
