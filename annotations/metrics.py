"""/metrics: django-prometheus's request and database metrics plus Affectloop's own gauges.

The gauges are read at scrape time (queue depths from the broker, the rest from the database) and kept for
METRICS_CACHE_SECONDS, so several Prometheus servers or gunicorn workers scraping at once cost one read.
Under gunicorn, django-prometheus's counters live in PROMETHEUS_MULTIPROC_DIR (platform/gunicorn.conf.py)
and any worker answers for all of them.
"""

import hmac
import ipaddress
import logging
import os
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

PRELABEL_WINDOW_SECONDS = 300


def app_queues() -> list[str]:
    """Every queue a task is routed to: default, media, gpu, train."""
    routes = getattr(settings, "CELERY_TASK_ROUTES", {}) or {}
    routed = (route["queue"] for route in routes.values() if "queue" in route)
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, *routed})


def queue_depths(app, queues: list[str]) -> dict[str, int] | None:
    """Messages waiting per queue, None when the broker does not answer.

    A passive queue_declare works on every transport here: Redis counts the list (all priority levels),
    RabbitMQ answers from the queue, the filesystem broker counts its files. A queue nobody declared yet
    holds nothing."""
    from kombu.exceptions import ChannelError

    depths = {}
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            not_found = (ChannelError, *conn.channel_errors)
            for queue in queues:
                # A channel per queue: RabbitMQ closes a channel on a passive declare of a missing queue.
                channel = conn.channel()
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except not_found:
                    depths[queue] = 0
                finally:
                    try:
                        channel.close()
                    except Exception:  # noqa: BLE001  already closed by the broker
                        pass
    except Exception as exc:  # noqa: BLE001  a broker outage must not take /metrics down with it
        logger.warning("queue depths unavailable: %s", exc)
        return None
    return depths


def read_gauges() -> dict:
    """Everything the gauges show, as plain data (tests assert on it too)."""
    from config.celery import app

    from .models import Clip, Prediction, TrainingRun

    now = timezone.now()
    since = now - timedelta(seconds=PRELABEL_WINDOW_SECONDS)
    # Imported predictions are not pre-labeling work. Distinct clips: a clip's backends and fusion count once.
    prelabeled = (Prediction.objects.filter(created_at__gte=since).exclude(backend="import")
                  .values("clip_id").distinct().count())
    runs = []
    live = TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
    for run in live.select_related("project").only("id", "status", "progress", "metrics", "heartbeat_at",
                                                  "project__slug"):
        last = run.metrics[-1] if isinstance(run.metrics, list) and run.metrics else {}
        runs.append({
            "run": str(run.id), "project": run.project.slug, "status": run.status, "progress": run.progress,
            "step": last.get("step") if isinstance(last, dict) else None,
            "loss": last.get("loss") if isinstance(last, dict) else None,
            "heartbeat_age": (now - run.heartbeat_at).total_seconds() if run.heartbeat_at else None,
        })
    return {
        "queues": queue_depths(app, app_queues()),
        "clips": {row["status"]: row["n"] for row in Clip.objects.values("status").annotate(n=Count("id"))},
        "prelabel_clips": prelabeled,
        "prelabel_clips_per_second": prelabeled / PRELABEL_WINDOW_SECONDS,
        "training": runs,
    }


class AffectloopCollector:
    """Queue depth per queue, clips per status, pre-label throughput, and progress of live training runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cached: tuple[float, dict | None] = (0.0, None)

    def gauges(self) -> dict:
        ttl = getattr(settings, "METRICS_CACHE_SECONDS", 5)
        with self._lock:
            at, data = self._cached
            if data is None or time.monotonic() - at >= ttl:
                data = read_gauges()
                self._cached = (time.monotonic(), data)
            return data

    def clear(self):
        with self._lock:
            self._cached = (0.0, None)

    def collect(self):
        data = self.gauges()
        up = GaugeMetricFamily("affectloop_broker_up", "1 when the Celery broker answered the last read")
        up.add_metric([], 0 if data["queues"] is None else 1)
        yield up
        if data["queues"] is not None:
            depth = GaugeMetricFamily("affectloop_queue_depth", "Tasks waiting in the broker, per queue",
                                      labels=["queue"])
            for queue, n in sorted(data["queues"].items()):
                depth.add_metric([queue], n)
            yield depth
        clips = GaugeMetricFamily("affectloop_clips", "Clips per media status", labels=["status"])
        for status, n in sorted(data["clips"].items()):
            clips.add_metric([status], n)
        yield clips
        rate = GaugeMetricFamily("affectloop_prelabel_clips_per_second",
                                 f"Clips pre-labeled per second over the last {PRELABEL_WINDOW_SECONDS} s")
        rate.add_metric([], data["prelabel_clips_per_second"])
        yield rate
        recent = GaugeMetricFamily("affectloop_prelabel_clips_recent",
                                   f"Clips pre-labeled in the last {PRELABEL_WINDOW_SECONDS} s")
        recent.add_metric([], data["prelabel_clips"])
        yield recent
        labels = ["project", "run", "status"]
        progress = GaugeMetricFamily("affectloop_training_progress", "Live training run: progress, 0..1",
                                     labels=labels)
        step = GaugeMetricFamily("affectloop_training_step", "Live training run: last logged step",
                                 labels=labels)
        loss = GaugeMetricFamily("affectloop_training_loss", "Live training run: last logged loss",
                                 labels=labels)
        age = GaugeMetricFamily("affectloop_training_heartbeat_age_seconds",
                                "Live training run: seconds since its worker's last heartbeat", labels=labels)
        for run in data["training"]:
            key = [run["project"], run["run"], run["status"]]
            progress.add_metric(key, run["progress"])
            for family, value in ((step, run["step"]), (loss, run["loss"]), (age, run["heartbeat_age"])):
                if isinstance(value, (int, float)):
                    family.add_metric(key, value)
        yield from (progress, step, loss, age)


collector = AffectloopCollector()
_app_registry = CollectorRegistry(auto_describe=False)
_app_registry.register(collector)


def exposition() -> bytes:
    """django-prometheus's metrics (every gunicorn worker's, in multiprocess mode) followed by ours."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_app_registry)


def _loopback(request) -> bool:
    # Behind nginx the peer is nginx, on a private address; X-Forwarded-For gives the proxied request away.
    if "HTTP_X_FORWARDED_FOR" in request.META:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@never_cache
@require_GET
def metrics_view(request):
    """With AFFECTLOOP_METRICS_TOKEN set, `Authorization: Bearer <token>` is required; without it, only a
    direct request from this host's loopback is answered (`make run`)."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            response = HttpResponse("metrics need a bearer token\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    elif not _loopback(request):
        return HttpResponse("metrics answer only on loopback unless AFFECTLOOP_METRICS_TOKEN is set\n",
                            status=403, content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
