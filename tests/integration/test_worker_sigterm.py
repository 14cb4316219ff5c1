"""A busy embedded worker stops promptly when its whole process group is signalled, and loses no clip.

Ctrl-C in a terminal signals the foreground process group, and honcho (`make run`) and most process managers
stop a process with `killpg`. The worker here is the one `make run` starts (the `worker:` line of
platform/Procfile.embedded) on the filesystem broker in a private data dir, started in a session of its
own and signalled while it is processing clips with more queued. Every wait is bounded; a worker that
does not stop is killed, so the test never hangs.
"""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import needs_ffmpeg
from tests.embedded import REPO, log_tail, platform_env

pytestmark = [pytest.mark.slow, needs_ffmpeg]

CLIPS = 16          # enough that some are still queued when the first one is being processed
BUSY_TIMEOUT = 60   # seconds for the worker to start taking clips
STOP_WITHIN = 20    # seconds from the signal to exit: a warm shutdown finishes at most `concurrency` clips
MANAGE_TIMEOUT = 180


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from ml.testing.samples import generate_sample_clips

    out = tmp_path_factory.mktemp("sigterm-clips")
    generate_sample_clips(out, CLIPS, seconds=1.0, width=160, height=120, seed=11, speech=False)
    return out


def embedded_worker_command() -> list[str]:
    for line in (REPO / "platform" / "Procfile.embedded").read_text().splitlines():
        if line.startswith("worker:"):
            return shlex.split(line.partition(":")[2])
    pytest.fail("platform/Procfile.embedded has no worker: line")


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=MANAGE_TIMEOUT, stdin=subprocess.DEVNULL, check=False)


def statuses(db: sqlite3.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT status, count(*) FROM annotations_clip GROUP BY status").fetchall())


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


# Celery exits 0 after a warm shutdown on SIGTERM, and 1 (EX_FAILURE) after one on SIGINT, by design.
@pytest.mark.parametrize("sig, exit_status", [(signal.SIGTERM, 0), (signal.SIGINT, 1)], ids=["SIGTERM", "SIGINT"])
def test_busy_worker_stops_promptly_when_its_process_group_is_signalled(tmp_path, clip_dir, sig, exit_status):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = platform_env(data_dir, 0, Path(sys.executable).parent)

    for args in (("migrate", "-v0"), ("import_clips", str(clip_dir), "--project", "sigterm", "--create-project")):
        result = manage(env, *args)
        assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    assert result.stdout.count("imported ") == CLIPS, result.stdout[-2000:]

    log_path = tmp_path / "worker.log"
    db = sqlite3.connect(data_dir / "affectloop.sqlite3", timeout=30)
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(embedded_worker_command(), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            seen = statuses(db)
            if seen.get("processing", 0) + seen.get("ready", 0) + seen.get("failed", 0):
                break
            if worker.poll() is not None:
                pytest.fail(f"the worker exited ({worker.returncode}) before taking a clip:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the worker took no clip within {BUSY_TIMEOUT} s:\n{log_tail(log_path)}")
            time.sleep(0.05)
        assert seen.get("pending", 0) > 0, f"every clip was done before the signal: {seen}; raise CLIPS"

        os.killpg(worker.pid, sig)
        sent = time.monotonic()
        try:
            worker.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            kill_group(worker)
            pytest.fail(f"the worker was still running {STOP_WITHIN} s after {sig.name} to its process group "
                        f"(killed; clips when signalled: {seen}):\n{log_tail(log_path)}")
        took = time.monotonic() - sent

        deadline = time.monotonic() + 5
        while group_alive(worker.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(worker.pid), "processes of the worker's group outlived it"
        assert worker.returncode == exit_status, \
            f"exit status {worker.returncode} after {took:.1f} s:\n{log_tail(log_path)}"

        after = statuses(db)
        failed = db.execute("SELECT original_name, error FROM annotations_clip WHERE status = 'failed'").fetchall()
        # The signal reaches the worker's group, not the ffprobe/ffmpeg it runs: a clip being processed is
        # finished by the warm shutdown, never marked corrupt because its probe was killed.
        assert failed == [], f"clips failed by the shutdown: {failed}\n{log_tail(log_path)}"
        assert after.get("processing", 0) == 0, f"clips left half-processed: {after}\n{log_tail(log_path)}"
        assert after.get("ready", 0) >= 1 and after.get("pending", 0) >= 1, after  # the rest wait in the broker
    finally:
        db.close()
        if worker.poll() is None:
            kill_group(worker)
