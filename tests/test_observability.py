"""Operations: /metrics (django-prometheus plus our gauges, behind a token), the GPU workers' own metrics
endpoint, the heartbeat behind the worker health checks, gunicorn's multiprocess hooks, the task context on
log lines, and the project page's links to the tools."""

import io
import json
import logging
import os
import runpy
import socket
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from annotations import metrics, observability
from annotations.models import Clip, Prediction, TrainingRun

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-" + "t" * 32


def samples(text: str) -> dict:
    """Exposition text → {(sample name, frozenset of labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels):
    return found.get((name, frozenset(labels.items())))


def names(found: dict) -> set[str]:
    return {name for name, _ in found}


@pytest.fixture(autouse=True)
def _fresh_gauges(settings):
    settings.METRICS_CACHE_SECONDS = 0
    metrics.collector.clear()
    yield
    metrics.collector.clear()


# --- /metrics -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_need_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = TOKEN
    url = reverse("metrics")
    assert url == "/metrics"
    refused = client.get(url)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    answered = client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answered.status_code == 200
    assert answered["Content-Type"].startswith("text/plain")
    found = samples(answered.content.decode())
    # django-prometheus's request metrics, counted by its middlewares (the refused requests above included).
    assert value(found, "django_http_requests_before_middlewares_total") >= 4
    assert "django_http_responses_total_by_status_total" in names(found)
    assert {"affectloop_broker_up", "affectloop_prelabel_clips_per_second"} <= names(found)


@pytest.mark.django_db
def test_without_a_token_metrics_answer_only_direct_loopback_requests(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    # Through nginx the peer is a private address and X-Forwarded-For is set: refused even from loopback.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1",
                      headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert client.post("/metrics", REMOTE_ADDR="127.0.0.1").status_code in (403, 405)


def test_the_gauges_cover_every_routed_queue():
    assert metrics.app_queues() == ["default", "gpu", "media", "train"]


def _clip(project, name: str, status: str) -> Clip:
    return Clip.objects.create(project=project, file=f"clips/{name}.mp4", sha256=uuid.uuid4().hex * 2,
                               name=name, original_name=f"{name}.mp4", size_bytes=1, status=status,
                               duration=2.0 if status == Clip.Status.READY else None)


@pytest.fixture
def test_queues(monkeypatch):
    """Queues of this test alone: a real broker (CI's Redis) must not get messages on the app's queues."""
    from config.celery import app

    queues = {q: f"affectloop-test-{q}-{uuid.uuid4().hex[:8]}" for q in ("media", "gpu")}
    monkeypatch.setattr(metrics, "app_queues", lambda: sorted(queues.values()))
    yield app, queues
    with app.connection_for_write() as conn:
        channel = conn.channel()
        for name in queues.values():
            try:
                channel.queue_delete(name)
            except Exception:  # noqa: BLE001  never declared
                pass
        channel.close()


@pytest.mark.django_db
def test_gauges_show_queue_depth_clips_prelabel_rate_and_live_training(client, settings, project,
                                                                       test_queues):
    app, queues = test_queues
    with app.connection_for_write() as conn:
        for queue, count in ((queues["media"], 3), (queues["gpu"], 1)):
            simple = conn.SimpleQueue(queue)
            for i in range(count):
                simple.put({"n": i})
            simple.close()
    pending = [_clip(project, f"p{i}", Clip.Status.PENDING) for i in range(2)]
    ready = [_clip(project, f"r{i}", Clip.Status.READY) for i in range(4)]
    # Pre-labeled in the last 5 minutes: 3 clips (one by two backends and the fusion: it counts once).
    for clip in ready[:3]:
        Prediction.objects.create(clip=clip, backend="internvl", model_version="internvl@1", labels=[])
    Prediction.objects.create(clip=ready[0], backend="affectgpt", model_version="affectgpt@1", labels=[])
    Prediction.objects.create(clip=ready[0], backend="fused", model_version="fused@1", labels=[])
    # Not counted: an imported prediction, and one from an hour ago.
    Prediction.objects.create(clip=ready[3], backend="import", model_version="import:x", labels=[])
    old = Prediction.objects.create(clip=pending[0], backend="internvl", model_version="internvl@0",
                                    labels=[])
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    live = TrainingRun.objects.create(project=project, status=TrainingRun.Status.RUNNING, progress=0.4,
                                      metrics=[{"step": 10, "loss": 2.5}, {"step": 20, "loss": 1.25}],
                                      heartbeat_at=timezone.now() - timedelta(seconds=30))
    TrainingRun.objects.create(project=project, status=TrainingRun.Status.SUCCEEDED, progress=1.0,
                               metrics=[{"step": 99, "loss": 0.1}])

    settings.METRICS_TOKEN = TOKEN
    answered = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answered.status_code == 200
    found = samples(answered.content.decode())
    assert value(found, "affectloop_broker_up") == 1
    assert value(found, "affectloop_queue_depth", queue=queues["media"]) == 3
    assert value(found, "affectloop_queue_depth", queue=queues["gpu"]) == 1
    assert value(found, "affectloop_clips", status="pending") == 2
    assert value(found, "affectloop_clips", status="ready") == 4
    assert value(found, "affectloop_prelabel_clips_recent") == 3
    assert value(found, "affectloop_prelabel_clips_per_second") == pytest.approx(3 / 300)
    run = {"project": project.slug, "run": str(live.id), "status": "running"}
    assert value(found, "affectloop_training_progress", **run) == pytest.approx(0.4)
    assert value(found, "affectloop_training_step", **run) == 20
    assert value(found, "affectloop_training_loss", **run) == pytest.approx(1.25)
    assert 29 <= value(found, "affectloop_training_heartbeat_age_seconds", **run) < 120
    # Only live runs: the finished one is not a series.
    series = [labels for name, labels in found if name == "affectloop_training_progress"]
    assert series == [frozenset(run.items())]

    # Consumed messages leave the queue.
    with app.connection_for_write() as conn:
        simple = conn.SimpleQueue(queues["media"])
        simple.get(timeout=1).ack()
        simple.close()
    metrics.collector.clear()
    found = samples(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode())
    assert value(found, "affectloop_queue_depth", queue=queues["media"]) == 2


@pytest.mark.django_db
def test_gauges_are_cached_between_scrapes(settings, project):
    settings.METRICS_CACHE_SECONDS = 60
    first = samples(metrics.exposition().decode())
    _clip(project, "late", Clip.Status.FAILED)
    assert value(samples(metrics.exposition().decode()), "affectloop_clips", status="failed") is None
    assert value(first, "affectloop_clips", status="failed") is None
    metrics.collector.clear()
    assert value(samples(metrics.exposition().decode()), "affectloop_clips", status="failed") == 1


def _unreachable_app(monkeypatch) -> Celery:
    # Celery prefers CELERY_BROKER_URL from the environment (the test settings set memory://) to its config.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    return Celery("unreachable", set_as_current=False)


def test_an_unreachable_broker_reports_down_instead_of_failing(monkeypatch):
    app = _unreachable_app(monkeypatch)
    started = time.monotonic()
    assert metrics.queue_depths(app, ["media"]) is None
    assert time.monotonic() - started < 15


# --- the GPU workers' own endpoint ----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return samples(answer.read().decode())


@pytest.fixture
def worker_endpoint():
    servers = []

    def start():
        port = _free_port()
        started = observability.start_worker_metrics(port, "127.0.0.1", "gpu@test", "gpu")
        assert started is not None
        servers.append(started[0])
        return port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_worker_endpoint_without_a_gpu_has_no_gpu_gauges(worker_endpoint, monkeypatch):
    monkeypatch.setattr(observability, "read_gpus", lambda: [])
    found = _scrape(worker_endpoint())
    assert value(found, "affectloop_worker_up", worker="gpu@test", queues="gpu") == 1
    assert not {n for n in names(found) if n.startswith("affectloop_gpu_")}


def test_worker_endpoint_reads_gpu_memory_and_utilisation(worker_endpoint, monkeypatch):
    smi = "0, GPU-aaa, 1024, 81920, 37\n1, GPU-bbb, 0, 81920, [N/A]\n"
    monkeypatch.setattr(observability, "read_gpus", lambda: observability.parse_nvidia_smi(smi))
    found = _scrape(worker_endpoint())
    gpu0 = {"worker": "gpu@test", "gpu": "0", "uuid": "GPU-aaa"}
    assert value(found, "affectloop_gpu_memory_used_bytes", **gpu0) == 1024 * 1024 * 1024
    assert value(found, "affectloop_gpu_memory_total_bytes", **gpu0) == 81920 * 1024 * 1024
    assert value(found, "affectloop_gpu_utilization_ratio", **gpu0) == pytest.approx(0.37)
    gpu1 = {"worker": "gpu@test", "gpu": "1", "uuid": "GPU-bbb"}
    assert value(found, "affectloop_gpu_memory_used_bytes", **gpu1) == 0
    assert value(found, "affectloop_gpu_utilization_ratio", **gpu1) is None  # [N/A]: left out, not 0


def test_nvidia_smi_output_is_limited_to_the_visible_devices(monkeypatch):
    smi = "0, GPU-aaa, 1, 2, 3\n1, GPU-bbb, 1, 2, 3\n2, GPU-ccc, 1, 2, 3\n"
    assert [g["gpu"] for g in observability.parse_nvidia_smi(smi, {"1", "GPU-ccc"})] == ["1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert observability._visible_devices() == {"2"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert observability._visible_devices() is None


def test_reading_gpus_never_imports_torch(monkeypatch):
    import sys

    monkeypatch.setattr(observability.shutil, "which", lambda name: None)  # no nvidia-smi
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert observability.read_gpus() == []
    assert "torch" not in sys.modules


def test_worker_ready_starts_the_endpoint_where_a_port_is_set(settings, monkeypatch):
    from config.celery import app

    port = _free_port()
    settings.WORKER_METRICS_PORT, settings.WORKER_METRICS_ADDR = port, "127.0.0.1"
    monkeypatch.setattr(observability, "read_gpus", lambda: [])
    monkeypatch.setattr(observability, "_worker_server", None)
    monkeypatch.delenv("AFFECTLOOP_HEARTBEAT_FILE", raising=False)
    observability._worker_ready(sender=SimpleNamespace(app=app, hostname="gpu@host-1"))
    server = observability._worker_server[0]
    try:
        found = _scrape(port)
        [labels] = [dict(labels) for name, labels in found if name == "affectloop_worker_up"]
        assert labels["worker"] == "gpu@host-1"
    finally:
        server.shutdown()
        server.server_close()


# --- heartbeat ------------------------------------------------------------------------------------
def test_heartbeat_touches_its_file_while_the_broker_answers(tmp_path):
    from config.celery import app

    path = tmp_path / "heartbeat"
    beat = observability.Heartbeat(app, str(path), interval=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.02)
        first = path.stat().st_mtime_ns
        while path.stat().st_mtime_ns == first:
            assert time.monotonic() < deadline, "heartbeat not renewed"
            time.sleep(0.02)
    finally:
        beat.stop()
    assert not beat.thread.is_alive()


def test_heartbeat_is_not_touched_without_a_broker(tmp_path, monkeypatch):
    app = _unreachable_app(monkeypatch)
    path = tmp_path / "heartbeat"
    beat = observability.Heartbeat(app, str(path), interval=0.05).start()
    beat.stop()
    assert not path.exists()


# --- gunicorn multiprocess mode -------------------------------------------------------------------
def test_gunicorn_prepares_and_cleans_the_multiprocess_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # unset: the data dir's folder
    conf = runpy.run_path(str(ROOT / "platform" / "gunicorn.conf.py"))
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == "", "reading the config changes nothing"
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"stale")
    (folder / "keep.txt").write_text("not ours")
    conf["on_starting"](None)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert folder.stat().st_mode & 0o077 == 0

    # A worker that exits leaves its live gauges behind unless child_exit marks it dead.
    (folder / "gauge_livesum_777.db").write_bytes(b"")
    (folder / "counter_777.db").write_bytes(b"")
    conf["child_exit"](None, SimpleNamespace(pid=777))
    assert sorted(p.name for p in folder.iterdir()) == ["counter_777.db", "keep.txt"]

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "elsewhere"))
    conf["on_starting"](None)
    assert (tmp_path / "elsewhere").is_dir()


# --- task context on log lines --------------------------------------------------------------------
@pytest.fixture
def task_app():
    app = Celery("log-context", set_as_current=False)
    app.conf.task_always_eager = True
    return app


def _handler(style: str, stream: io.StringIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(observability.TaskContextFilter(style))
    if style == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s%(task_context)s"))
    return handler


@pytest.mark.parametrize("style", ["text", "json"])
def test_log_lines_inside_a_task_carry_its_id_and_clip_ids(task_app, style):
    stream = io.StringIO()
    log = logging.getLogger("affectloop.test.tasks")
    handler = _handler(style, stream)
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    @task_app.task(name="test.prelabel_clips", shared=False)
    def prelabel_clips(clip_ids, project_id=None):
        log.info("labelling")
        return len(clip_ids)

    @task_app.task(name="test.process_clip", shared=False)
    def process_clip(clip_id):
        log.info("probing")

    try:
        batch = prelabel_clips.apply(args=([11, 12, 13],), kwargs={"project_id": 4})
        single = process_clip.apply(kwargs={"clip_id": 7})
        log.info("outside")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    if style == "text":
        prefix = "INFO affectloop.test.tasks:"
        assert lines[0] == (f"{prefix} labelling [task={batch.id} name=test.prelabel_clips "
                            "clips=11,12,13 project_id=4]")
        assert lines[1] == f"{prefix} probing [task={single.id} name=test.process_clip clips=7]"
        assert lines[2] == "INFO affectloop.test.tasks: outside"
    else:
        first, second, third = map(json.loads, lines)
        assert (first["message"], first["task_id"], first["clip_ids"], first["project_id"]) == (
            "labelling", batch.id, [11, 12, 13], 4)
        assert (second["task_id"], second["task_name"], second["clip_ids"]) == (
            single.id, "test.process_clip", [7])
        assert "task_id" not in third and "clip_ids" not in third
    assert observability.current_task_context() is None


def test_a_nested_eager_task_restores_its_callers_context(task_app):
    seen = []

    @task_app.task(name="test.inner", shared=False)
    def inner(clip_id):
        seen.append(observability.current_task_context()["clip_ids"])

    @task_app.task(name="test.outer", shared=False)
    def outer(clip_ids):
        inner.apply(args=(99,))
        seen.append(observability.current_task_context()["clip_ids"])

    outer.apply(args=([1, 2],))
    assert seen == [[99], [1, 2]]
    assert observability.current_task_context() is None


def test_the_real_tasks_name_their_clips():
    from annotations import tasks

    def context(task, *args, **kwargs):
        return observability.task_context(task, args, kwargs)

    assert context(tasks.process_clip, 5)["clip_ids"] == [5]
    assert context(tasks.prelabel_clips, [1, 2])["clip_ids"] == [1, 2]
    assert context(tasks.caption_clips, clip_ids=[3])["clip_ids"] == [3]
    assert context(tasks.train_run, 8)["run_id"] == 8
    assert "clip_ids" not in context(tasks.enqueue_prelabel)


def test_log_settings_follow_affectloop_log_format(tmp_path):
    import subprocess
    import sys

    code = ("import django, logging, json; django.setup(); from django.conf import settings as s;"
            "h = logging.getLogger().handlers[0];"
            "filters = [type(f).__name__ for f in h.filters];"
            "print(json.dumps([s.LOG_FORMAT, type(h.formatter).__name__, filters]))")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AFFECTLOOP_"))}
    base.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "k" * 50,
                 "AFFECTLOOP_DATA_DIR": str(tmp_path)})

    def run(**env):
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env},
                              capture_output=True, text=True, timeout=60)

    text = run()
    assert text.returncode == 0, text.stderr
    assert json.loads(text.stdout.splitlines()[-1]) == ["text", "Formatter", ["TaskContextFilter"]]
    as_json = run(AFFECTLOOP_LOG_FORMAT="JSON")
    assert json.loads(as_json.stdout.splitlines()[-1]) == ["json", "JsonFormatter", ["TaskContextFilter"]]
    bad = run(AFFECTLOOP_LOG_FORMAT="xml")
    assert bad.returncode != 0 and "AFFECTLOOP_LOG_FORMAT" in bad.stderr


# --- where to look --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_project_page_links_managers_to_the_operations_tools(client, settings, project, manager,
                                                                 annotator):
    settings.FLOWER_URL = "https://ops.example.org/flower/"
    settings.GRAFANA_URL = "https://ops.example.org/grafana/d/affectloop"
    settings.PROMETHEUS_URL = ""
    url = reverse("annotations:project-detail", kwargs={"slug": project.slug})
    client.force_login(manager)
    page = client.get(url).content.decode()
    assert 'href="https://ops.example.org/flower/"' in page
    assert 'href="https://ops.example.org/grafana/d/affectloop"' in page
    assert "Prometheus" not in page
    client.force_login(annotator)
    assert "ops.example.org" not in client.get(url).content.decode()


@pytest.mark.django_db
def test_no_operations_links_on_the_embedded_default(client, settings, project, manager):
    settings.FLOWER_URL = settings.GRAFANA_URL = settings.PROMETHEUS_URL = ""
    client.force_login(manager)
    page = client.get(reverse("annotations:project-detail", kwargs={"slug": project.slug})).content.decode()
    assert 'id="operations"' not in page


def test_tool_urls_must_be_http(tmp_path):
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AFFECTLOOP_"))}
    base.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "k" * 50,
                 "AFFECTLOOP_DATA_DIR": str(tmp_path), "AFFECTLOOP_FLOWER_URL": "javascript:alert(1)"})
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=base,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "AFFECTLOOP_FLOWER_URL" in result.stderr


# --- queue depth on the production brokers ----------------------------------------------------------
BROKERS = {"redis": ("redis://127.0.0.1:6379/15", 6379),
           "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672)}


@pytest.mark.services
@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_queue_depth_on_redis_and_rabbitmq(broker, monkeypatch):
    from tests.conftest import port_open

    url, port = BROKERS[broker]
    if not port_open("127.0.0.1", port):
        pytest.skip(f"no {broker} on 127.0.0.1:{port}")
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads it before its own configuration
    app = Celery("depths", set_as_current=False)
    name = f"affectloop-test-depth-{uuid.uuid4().hex[:8]}"
    missing = f"affectloop-test-missing-{uuid.uuid4().hex[:8]}"
    with app.connection_for_write() as conn:
        simple = conn.SimpleQueue(name)
        try:
            for i in range(3):
                simple.put({"n": i})
            # A missing queue first: RabbitMQ closes the channel it was asked on, and the next queue is
            # still counted.
            deadline = time.monotonic() + 5
            while (depths := metrics.queue_depths(app, [missing, name])) != {missing: 0, name: 3}:
                assert time.monotonic() < deadline, depths  # RabbitMQ counts a publish a moment later
                time.sleep(0.1)
        finally:
            simple.queue.delete()
            simple.close()
