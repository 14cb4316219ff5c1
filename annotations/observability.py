"""Worker-side observability: the task context on every log line, a heartbeat file for container health
checks, and a small Prometheus endpoint on GPU workers.

Imported by config/celery.py, so it must stay light: no Django models, no torch at import time. The
signal handlers run in worker, beat and (for eager tasks) web processes alike.
"""

import contextvars
import inspect
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

from celery import signals

logger = logging.getLogger(__name__)

# --- task context on log lines --------------------------------------------------------------------
# Contextvars, not thread-locals: they follow the task in the solo, threads and prefork pools alike.
_task = contextvars.ContextVar("affectloop_task", default=None)
# task id → the tokens of its context changes: a nested eager task restores its caller's context afterwards.
_tokens: dict[str, list] = {}

# Task arguments copied onto log lines. clip_id and clip_ids both end up in `clip_ids`.
CONTEXT_ARGS = ("project_id", "run_id", "export_id")


def task_context(task, args, kwargs) -> dict:
    """The log fields of one task call: its id and name, and the clip ids (and a few other ids) found among
    its arguments by name, whatever the task (process_clip(clip_id), prelabel_clips(clip_ids), ...)."""
    try:
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {})).arguments
    except (TypeError, ValueError):
        bound = dict(kwargs or {})
    clip_ids: list = []
    if bound.get("clip_id") is not None:
        clip_ids.append(bound["clip_id"])
    if isinstance(bound.get("clip_ids"), (list, tuple)):
        clip_ids.extend(bound["clip_ids"])
    context = {"task_id": getattr(task.request, "id", None), "task_name": task.name}
    if clip_ids:
        context["clip_ids"] = clip_ids
    for name in CONTEXT_ARGS:
        if isinstance(bound.get(name), (int, str)):
            context[name] = bound[name]
    return context


@signals.task_prerun.connect(weak=False)
def _set_task_context(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    context = task_context(task, args, kwargs)
    context["task_id"] = task_id or context["task_id"]
    _tokens.setdefault(task_id, []).append(_task.set(context))


@signals.task_postrun.connect(weak=False)
def _clear_task_context(sender=None, task_id=None, **extra):
    stack = _tokens.get(task_id)
    if not stack:
        return
    token = stack.pop()
    if not stack:
        _tokens.pop(task_id, None)
    try:
        _task.reset(token)
    except ValueError:  # set in another context (cannot happen with Celery's pools; be safe)
        _task.set(None)


def current_task_context() -> dict | None:
    return _task.get()


class TaskContextFilter(logging.Filter):
    """Puts the running task's id, name and clip ids on every record.

    style="json": as separate attributes, which python-json-logger writes as fields (absent outside tasks).
    style="text": as one `task_context` attribute, " [task=<id> name=<name> clips=1,2]" or "".
    """

    def __init__(self, style: str = "text"):
        super().__init__()
        self.style = style

    def filter(self, record: logging.LogRecord) -> bool:
        context = _task.get()
        if self.style == "json":
            for key, value in (context or {}).items():
                if not hasattr(record, key):
                    setattr(record, key, value)
            return True
        if context:
            parts = [f"task={context['task_id']}", f"name={context['task_name']}"]
            if context.get("clip_ids"):
                parts.append("clips=" + ",".join(str(c) for c in context["clip_ids"]))
            parts += [f"{key}={context[key]}" for key in CONTEXT_ARGS if key in context]
            record.task_context = " [" + " ".join(parts) + "]"
        else:
            record.task_context = ""
        return True


# --- heartbeat for container health checks --------------------------------------------------------
# A thread, not `celery inspect ping`: a solo-pool GPU worker cannot answer a ping while a task runs (a
# training chunk runs for many minutes), and a ping from the health check loads Django every time.
HEARTBEAT_SECONDS = 15.0


def _broker_reachable(app) -> bool:
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
        return True
    except Exception:  # noqa: BLE001  any failure means "not healthy now"
        return False


class Heartbeat:
    """Touches `path` every `interval` seconds while the broker answers. The compose health check fails when
    the file is older than a few intervals: the process hangs, or lost its broker."""

    def __init__(self, app, path: str, interval: float = HEARTBEAT_SECONDS):
        self.app, self.path, self.interval = app, path, interval
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="affectloop-heartbeat", daemon=True)

    def _run(self) -> None:
        while True:
            if _broker_reachable(self.app):
                with open(self.path, "a"):
                    pass
                os.utime(self.path, None)
            else:
                logger.warning("heartbeat: broker unreachable, %s not touched", self.path)
            if self._stop.wait(self.interval):
                return

    def start(self) -> "Heartbeat":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


_heartbeat: Heartbeat | None = None
_worker_server = None  # (server, thread) of the worker's metrics endpoint, kept for tests and shutdown


def start_heartbeat(app) -> Heartbeat | None:
    """Once per process, where AFFECTLOOP_HEARTBEAT_FILE is set (docker-compose.yml sets it)."""
    global _heartbeat
    path = os.environ.get("AFFECTLOOP_HEARTBEAT_FILE")
    if path and _heartbeat is None:
        _heartbeat = Heartbeat(app, path).start()
    return _heartbeat


# --- GPU readings ---------------------------------------------------------------------------------
def _visible_devices() -> set[str] | None:
    """CUDA_VISIBLE_DEVICES as indices or UUIDs; None: all. nvidia-smi ignores the variable itself."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None or value.strip() == "":
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def parse_nvidia_smi(text: str, visible: set[str] | None = None) -> list[dict]:
    """`nvidia-smi --query-gpu=index,uuid,memory.used,memory.total,utilization.gpu --format=csv,noheader,
    nounits` → [{gpu, used_bytes, total_bytes, utilization}]; "[N/A]" fields are left out."""
    gpus = []
    for line in text.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5:
            continue
        index, uuid, used, total, util = fields
        if visible is not None and index not in visible and uuid not in visible:
            continue
        gpu = {"gpu": index, "uuid": uuid}
        for key, value, scale in (("used_bytes", used, 1024 * 1024), ("total_bytes", total, 1024 * 1024),
                                  ("utilization", util, 0.01)):
            try:
                gpu[key] = float(value) * scale
            except ValueError:
                pass
        gpus.append(gpu)
    return gpus


def read_gpus() -> list[dict]:
    """Memory and utilisation of this worker's GPUs; [] where there is none.

    nvidia-smi first: it needs no CUDA context (one made in a prefork parent would break its children).
    torch only when this process has already initialised CUDA itself; never imported here."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            query = [smi, "--query-gpu=index,uuid,memory.used,memory.total,utilization.gpu",
                     "--format=csv,noheader,nounits"]
            out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
            return parse_nvidia_smi(out, _visible_devices())
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("nvidia-smi failed: %s", exc)
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        gpu = {"gpu": str(i), "uuid": "", "used_bytes": float(total - free), "total_bytes": float(total)}
        try:
            gpu["utilization"] = torch.cuda.utilization(i) / 100.0  # needs pynvml
        except Exception:  # noqa: BLE001  no NVML here: memory alone
            pass
        gpus.append(gpu)
    return gpus


# --- the worker's own /metrics --------------------------------------------------------------------
class WorkerCollector:
    """Scraped from the worker's own port: which worker this is, and its GPUs (absent without one)."""

    cache_seconds = 5.0

    def __init__(self, worker: str, queues: str):
        self.worker, self.queues = worker, queues
        self._cached: tuple[float, list] = (0.0, [])
        self._lock = threading.Lock()

    def gpus(self) -> list[dict]:
        with self._lock:
            at, gpus = self._cached
            if time.monotonic() - at > self.cache_seconds:
                gpus = read_gpus()
                self._cached = (time.monotonic(), gpus)
            return gpus

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        info = GaugeMetricFamily("affectloop_worker_up", "1 while this Celery worker runs",
                                 labels=["worker", "queues"])
        info.add_metric([self.worker, self.queues], 1)
        yield info
        gpus = self.gpus()
        if not gpus:
            return
        labels = ["worker", "gpu", "uuid"]
        families = {
            "used_bytes": GaugeMetricFamily("affectloop_gpu_memory_used_bytes",
                                            "GPU memory in use (all processes)", labels=labels),
            "total_bytes": GaugeMetricFamily("affectloop_gpu_memory_total_bytes", "GPU memory size",
                                             labels=labels),
            "utilization": GaugeMetricFamily("affectloop_gpu_utilization_ratio",
                                             "GPU busy share over the driver's last sample period, 0..1",
                                             labels=labels),
        }
        for gpu in gpus:
            for key, family in families.items():
                if key in gpu:
                    family.add_metric([self.worker, gpu["gpu"], gpu["uuid"]], gpu[key])
        yield from (f for f in families.values() if f.samples)


def start_worker_metrics(port: int, addr: str, worker: str, queues: str):
    """Serve WorkerCollector on addr:port in a thread; returns (server, thread), or None if the port is taken
    (a second worker on the same host: give each its own AFFECTLOOP_WORKER_METRICS_PORT)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker, queues))
    try:
        return start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        logger.warning("worker metrics not served on %s:%s: %s", addr, port, exc)
        return None


@signals.worker_ready.connect(weak=False)
def _worker_ready(sender=None, **extra):
    global _worker_server
    app = sender.app
    start_heartbeat(app)
    from django.conf import settings

    port = getattr(settings, "WORKER_METRICS_PORT", 0)
    if port and _worker_server is None:
        queues = ",".join(sorted(q.name for q in (app.amqp.queues.consume_from or {}).values()))
        addr = getattr(settings, "WORKER_METRICS_ADDR", "127.0.0.1")
        _worker_server = start_worker_metrics(port, addr, sender.hostname, queues)


@signals.beat_init.connect(weak=False)
def _beat_init(sender=None, **extra):
    start_heartbeat(sender.app)
