"""Folder-import throughput on the embedded default, against ffprobe alone on the same files.

    python bench/ingest.py [--count 1000] [--clips DIR] [--keep]

Generates N sample clips (or uses DIR), then in one run measures:
  1. baseline: one plain `ffprobe` per file, with as many in flight as the importer uses;
  2. `manage.py import_clips DIR` (validation by content + sha256 + store, report final);
  3. a real Celery worker on the filesystem broker turning every stored clip `ready` (probe + thumbnail),
     started with the worker line of platform/Procfile.embedded, i.e. the worker `make run` starts.
Prints clips per second for each and the ratios against the baseline.
"""

import argparse
import os
import secrets
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ffprobe_alone(files: list[Path], workers: int) -> float:
    def probe(path):
        subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                       check=True, capture_output=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(probe, files))
    return time.perf_counter() - start


def embedded_worker_command() -> list[str]:
    """The `worker:` command of platform/Procfile.embedded (what `make run` starts), as an argv list."""
    for line in (ROOT / "platform" / "Procfile.embedded").read_text().splitlines():
        if line.startswith("worker:"):
            return shlex.split(line.partition(":")[2])
    raise SystemExit("platform/Procfile.embedded has no worker: line")


def stop_worker(worker: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the worker's main process only (a warm shutdown), then SIGKILL its group if it hangs.

    Signalling the whole group (killpg) made prefork children die under the parent, which then hung.
    """
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"worker did not stop within {timeout:.0f} s of SIGTERM; killed", file=sys.stderr)
        try:
            os.killpg(worker.pid, signal.SIGKILL)  # start_new_session: the group is the worker's own
        except ProcessLookupError:
            pass
        worker.wait(10)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--clips", type=Path, help="use these clips instead of generating new ones")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="affectloop-bench-"))
    clips = args.clips
    if clips is None:
        from ml.testing.samples import generate_sample_clips

        clips = work / "clips"
        t = time.perf_counter()
        generate_sample_clips(clips, args.count, seed=1)
        print(f"generated {args.count} clips in {time.perf_counter() - t:.1f} s", flush=True)
    files = sorted(p for p in clips.rglob("*.mp4"))
    n = len(files)
    workers = min(8, (os.cpu_count() or 2) * 2)  # the importer's default

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY_FILE")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "AFFECTLOOP_DATA_DIR": str(work / "data"),
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)})
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)

    baseline = ffprobe_alone(files, workers)

    t = time.perf_counter()
    result = subprocess.run([*manage, "import_clips", str(clips), "--project", "bench", "--create-project"],
                            env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    import_s = time.perf_counter() - t
    imported = sum(1 for line in result.stdout.splitlines() if line.startswith("imported "))
    if result.returncode != 0 or imported != n:
        print(result.stdout[-2000:], result.stderr[-2000:])
        raise SystemExit(f"import failed: {imported}/{n} imported, exit {result.returncode}")

    db = sqlite3.connect(work / "data" / "affectloop.sqlite3", timeout=30)
    worker_cmd = embedded_worker_command()
    pool = worker_cmd[worker_cmd.index("--pool") + 1] if "--pool" in worker_cmd else "prefork"
    concurrency = worker_cmd[worker_cmd.index("--concurrency") + 1] if "--concurrency" in worker_cmd else "?"
    with open(work / "worker.log", "wb") as log:
        worker = subprocess.Popen(worker_cmd, env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
                                  cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    t = time.perf_counter()
    try:
        while True:
            ready, failed = db.execute("SELECT count(*) FILTER (WHERE status = 'ready'), "
                                       "count(*) FILTER (WHERE status = 'failed') FROM annotations_clip").fetchone()
            if ready == n:
                break
            if failed or worker.poll() is not None or time.perf_counter() - t > 3600:
                tail = (work / "worker.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"only {ready}/{n} ready ({failed} failed, worker exit {worker.returncode}; "
                                 f"data kept in {work})\n{tail}")
            time.sleep(0.5)
        process_s = time.perf_counter() - t
    finally:
        stop_worker(worker)

    print(f"clips: {n}  (in-flight ffprobe processes: {workers}, worker: --pool {pool} --concurrency {concurrency}, "
          f"as `make run`)")
    print(f"ffprobe alone:              {n / baseline:8.1f} clips/s  ({baseline:.1f} s)")
    print(f"import_clips (validate+store): {n / import_s:5.1f} clips/s  ({import_s:.1f} s)  "
          f"= {baseline / import_s:.2f}x the ffprobe-alone rate")
    print(f"worker to ready (probe+thumb): {n / process_s:5.1f} clips/s  ({process_s:.1f} s, incl. polling)  "
          f"= {baseline / process_s:.2f}x the ffprobe-alone rate")
    total = import_s + process_s
    print(f"end to end:                 {n / total:8.1f} clips/s  = {baseline / total:.2f}x the ffprobe-alone rate")
    if args.keep:
        print(f"data kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
