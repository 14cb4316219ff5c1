"""Folder-import throughput on the embedded default, against ffprobe alone on the same files.

    python bench/ingest.py [--count 1000] [--clips DIR] [--keep]

Generates N sample clips (or uses DIR), then in one run measures:
  1. baseline: one plain `ffprobe` per file, with as many in flight as the importer uses;
  2. `manage.py import_clips DIR` (validation by content + sha256 + store, report final);
  3. a real Celery worker on the filesystem broker turning every stored clip `ready` (probe + thumbnail).
Prints clips per second for each and the ratios against the baseline.
"""

import argparse
import os
import secrets
import shutil
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--clips", type=Path, help="use these clips instead of generating new ones")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="affectloop-bench-"))
    clips = args.clips
    if clips is None:
        from annotations.samples import generate_sample_clips

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
                            env=env, cwd=ROOT, capture_output=True, text=True)
    import_s = time.perf_counter() - t
    imported = sum(1 for line in result.stdout.splitlines() if line.startswith("imported "))
    if result.returncode != 0 or imported != n:
        print(result.stdout[-2000:], result.stderr[-2000:])
        raise SystemExit(f"import failed: {imported}/{n} imported, exit {result.returncode}")

    db = sqlite3.connect(work / "data" / "affectloop.sqlite3", timeout=30)
    worker = subprocess.Popen(["celery", "-A", "config", "worker", "-Q", "media,default", "--concurrency",
                               str(os.cpu_count() or 2), "--loglevel", "WARNING"], env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t = time.perf_counter()
    try:
        while True:
            ready = db.execute("SELECT count(*) FROM annotations_clip WHERE status = 'ready'").fetchone()[0]
            if ready == n:
                break
            if time.perf_counter() - t > 3600:
                raise SystemExit(f"only {ready}/{n} ready after an hour")
            time.sleep(0.5)
        process_s = time.perf_counter() - t
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)

    print(f"clips: {n}  (in-flight ffprobe processes: {workers}, worker processes: {os.cpu_count()})")
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
