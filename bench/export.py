"""Dataset exports at scale: time and peak RSS of writing a snapshot of N clips as merov-csv and as parquet
through services.exports, against writing the same rows with the csv module alone.

    python bench/export.py [--clips 100000] [--reps 5] [--keep DIR]

Sets itself up on the embedded default (SQLite in a temporary data directory, migrated with manage.py): one
project, N ready clips and one snapshot of N items (labels, canonical terms, families, a transcript, two
model predictions each), written with bulk_create (freezing N verified clips through the services would
measure the services, not the export).

Each case runs --reps times, each in its own fresh interpreter (the median time is reported), so peak RSS (getrusage's ru_maxrss) is that case's alone; every
case imports Django, pyarrow and the export modules before measuring, and reports its peak above that
starting point. The cases:
  baseline   one query over the snapshot's items (name and labels, in id order) into csv.writer:
             the least any CSV export of these rows can do;
  merov-csv  services.exports.write_export(..., "merov-csv"): rows sorted by name in Python, fetched in
             chunks, plus the dataset card;
  parquet    the same in parquet (every column, row groups of 2,000).
The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "Export bench"
WORDS = [("angry", "anger"), ("furious", "anger"), ("sad", "sadness"), ("tired", "sadness"), ("calm", "calm"),
         ("happy", "joy"), ("hopeful", "joy"), ("worried", "fear"), ("anxious", "fear"), ("surprised", "surprise"),
         ("betrayed", "sadness"), ("confused", "surprise")]
CASES = ("baseline", "merov-csv", "parquet")


def environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AFFECTLOOP_", "DJANGO_")) and k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "AFFECTLOOP_DATA_DIR": str(work / "data"),
                "DJANGO_SECRET_KEY": (work / "secret").read_text(), "CELERY_BROKER_URL": "memory://",
                "PYTHONPATH": str(ROOT)})
    return env


def setup_django() -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()


def fill(clips: int) -> int:
    """The project, its clips and one snapshot of them, in bulk. Returns the snapshot's id."""
    from django.db import transaction

    from annotations.models import Clip, DatasetSnapshot, SnapshotItem
    from annotations.services.projects import create_project

    rng = random.Random(7)
    project = create_project(name=PROJECT, creator=None)
    snapshot = DatasetSnapshot.objects.create(project=project, name="bench", content_hash="e" * 64,
                                              clip_count=clips, split_counts={})
    step = 5000
    for start in range(0, clips, step):
        with transaction.atomic():
            rows = [Clip(project=project, file=f"clips/{n}.mp4", sha256=f"{n:064x}",
                         name=f"clip-{rng.randrange(10**9):09d}-{n}", size_bytes=1_000_000, status="ready",
                         duration=3.0 + n % 7, fps=25.0, width=1280, height=720, has_audio=True,
                         transcript=f"I never thought it would end like this, number {n}.",
                         metadata={"subject": f"s{n % 900}"}) for n in range(start, min(clips, start + step))]
            made = Clip.objects.bulk_create(rows)
            items = []
            for clip in made:
                picked = rng.sample(WORDS, rng.randint(1, 3))
                labels = [w for w, _ in picked]
                predictions = [{"backend": b, "model_version": f"{b}:v1",
                                "labels": [{"term": w, "score": round(rng.random(), 3), "source": b}
                                           for w in labels[:2]]} for b in ("fused", "internvl")]
                items.append(SnapshotItem(snapshot=snapshot, clip=clip, clip_name=clip.name, sha256=clip.sha256,
                                          transcript=clip.transcript, labels=labels, terms=labels,
                                          families=[f for _, f in picked],
                                          split=rng.choice(["train"] * 8 + ["val", "test"]),
                                          annotator_ids=[rng.randint(1, 20)], reviewer_ids=[rng.randint(21, 25)],
                                          predictions=predictions))
            SnapshotItem.objects.bulk_create(items)
    return snapshot.pk


def run_case(case: str, snapshot_id: int, out: Path) -> dict:
    """One case in this (fresh) interpreter: seconds, and peak RSS above the post-import starting point."""
    import csv

    import pyarrow.parquet  # noqa: F401 - imported by every case, so no case pays for it in its figure

    from annotations.models import DatasetSnapshot, SnapshotItem
    from annotations.services import exports

    snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if case == "baseline":
        out.mkdir(parents=True)
        rows = 0
        with open(out / "merov.csv", "w", encoding="utf-8", newline="\n") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["name", "openset"])
            for name, labels in (SnapshotItem.objects.filter(snapshot=snapshot).order_by("pk")
                                 .values_list("clip_name", "labels").iterator(chunk_size=2000)):
                writer.writerow([name, repr(labels)])
                rows += 1
    else:
        rows = exports.write_export(snapshot, case, out)["row_count"]
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"case": case, "rows": rows, "seconds": round(seconds, 3), "peak_rss_mb": round(peak / 1024, 1),
            "rss_growth_mb": round((peak - start_rss) / 1024, 1), "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5, help="fresh processes per case (median time)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--snapshot", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.fill or args.case:
        setup_django()
        if args.fill:
            print(json.dumps({"snapshot": fill(args.clips)}))
        else:
            print(json.dumps(run_case(args.case, args.snapshot, Path(args.out))))
        return

    work = Path(args.keep or tempfile.mkdtemp(prefix="affectloop-export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "secret").write_text(secrets.token_urlsafe(50))
    env = environment(work)
    try:
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, check=True, cwd=ROOT)
        t = time.perf_counter()
        filled = subprocess.run([sys.executable, __file__, "--fill", "--clips", str(args.clips)], env=env,
                                cwd=ROOT, check=True, capture_output=True, text=True)
        snapshot = json.loads(filled.stdout.strip().splitlines()[-1])["snapshot"]
        print(f"filled {args.clips} clips and one snapshot in {time.perf_counter() - t:.1f} s", flush=True)
        results = {}
        for case in CASES:
            runs = []
            for rep in range(args.reps):
                out = work / "out" / f"{case}-{rep}"
                done = subprocess.run([sys.executable, __file__, "--case", case, "--snapshot", str(snapshot),
                                       "--out", str(out)], env=env, cwd=ROOT, check=True, capture_output=True,
                                      text=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                shutil.rmtree(out)
            # The median time (the baseline is short enough for one slow read to double it) and the largest
            # memory growth seen.
            runs.sort(key=lambda r: r["seconds"])
            r = results[case] = {**runs[len(runs) // 2],
                                 "rss_growth_mb": max(run["rss_growth_mb"] for run in runs),
                                 "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}
            print(f"{case:10s} {r['rows']:7d} rows  {r['seconds']:7.2f} s  {r['rows'] / r['seconds']:9.0f} rows/s  "
                  f"peak RSS {r['peak_rss_mb']:7.1f} MB (+{r['rss_growth_mb']:.1f} MB while writing)  "
                  f"{r['bytes'] / 1e6:.1f} MB written", flush=True)
        base = results["baseline"]
        ratios = {case: {"time": round(results[case]["seconds"] / base["seconds"], 2),
                         "rss_growth_mb": results[case]["rss_growth_mb"]} for case in CASES[1:]}
        for case, ratio in ratios.items():
            print(f"{case} vs csv alone: {ratio['time']:.2f}x the time, +{ratio['rss_growth_mb']:.1f} MB RSS "
                  f"while writing (csv alone: +{base['rss_growth_mb']:.1f} MB)")
        print(json.dumps({"clips": args.clips, "results": results, "ratios": ratios}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
