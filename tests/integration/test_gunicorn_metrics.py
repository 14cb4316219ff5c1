"""gunicorn with platform/gunicorn.conf.py, several workers: /metrics adds up every worker's django-prometheus
counters (multiprocess mode), whichever worker answers, and files left by an earlier run are cleared. With
AFFECTLOOP_LOG_FORMAT=json every line gunicorn and the app write is a JSON object."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-" + "m" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


def _gets(metrics: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            by_method = sample.name == "django_http_requests_total_by_method_total"
            if by_method and sample.labels == {"method": "GET"}:
                return sample.value
    return 0.0


@pytest.mark.slow
def test_gunicorn_workers_add_up_their_metrics(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AFFECTLOOP_", "DJANGO_", "PROMETHEUS_")) and k not in ("DATABASE_URL",
                                                                                         "CELERY_BROKER_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "k" * 50,
                "AFFECTLOOP_DATA_DIR": str(tmp_path), "AFFECTLOOP_METRICS_TOKEN": TOKEN,
                "AFFECTLOOP_METRICS_CACHE_SECONDS": "0", "AFFECTLOOP_LOG_FORMAT": "json"})
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    (tmp_path / "static").mkdir()  # else whitenoise's warning, which Python prints outside logging
    folder = tmp_path / "prometheus"
    folder.mkdir(mode=0o700)
    (folder / "counter_1.db").write_bytes(b"left by an earlier run")  # unreadable if it were kept

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "platform/gunicorn.conf.py",
                             "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "3",
                             "--threads", "1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(base + "/healthz")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "gunicorn did not answer /healthz"
                time.sleep(0.2)
        assert not (folder / "counter_1.db").exists()
        done = _gets(_get(base + "/metrics", TOKEN))
        for _ in range(5):
            for _ in range(10):
                _get(base + "/healthz")
            # Each scrape counts every GET so far (the scrapes included), whichever worker answers it. One
            # worker's own counter, without multiprocess mode, would fall short.
            seen = _gets(_get(base + "/metrics", TOKEN))
            assert seen == done + 11, (seen, done)
            done = seen
        workers = {name.split("_")[-1] for name in os.listdir(folder) if name.startswith("counter_")}
        assert workers, "no worker wrote its counters to PROMETHEUS_MULTIPROC_DIR"
        assert folder.stat().st_mode & 0o077 == 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
    lines = (tmp_path / "gunicorn.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # every line, or this fails
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    assert len(access) == 5 * 11 + 2 and all("GET /" in r["message"] for r in access)
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in records)
