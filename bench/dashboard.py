"""The project dashboard at scale on PostgreSQL: what the beat task spends computing the figures, against what
the page spends showing them, and a bare SELECT 1.

    python bench/dashboard.py [--clips 1000000] [--reps 10] [--db NAME] [--refill]

Uses bench/clip_list.py's database and fill (the same project: clips in every label state, two annotators on
every submitted or verified clip, accept reviews of the verified ones, three backends and five model
versions), so the two benches share one filled database. Then:
  compute      services.dashboard.compute(project), once, each part timed (progress, throughput, agreement,
               labels, models, gold, drift): the work the 15-minute beat task does;
  page         what the dashboard view does per request once the figures are stored: read the stored row,
               turn the figures into plots and render the template; --reps times, median and p95;
  SELECT 1     a round trip on the same connection, timed just before each page (the baseline).
The page's figure is printed as a ratio to SELECT 1 and to the compute it avoids. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import clip_list
import queue_latency as ql


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--db", help="database name (default: bench/clip_list.py's for this size)")
    parser.add_argument("--refill", action="store_true", help="drop and fill the database again")
    args = parser.parse_args()
    dbname = args.db or "affectloop_bench_clips" + ("" if args.clips == 1_000_000 else f"_{args.clips}")
    data_dir = Path(tempfile.mkdtemp(prefix="affectloop-bench-dashboard-"))
    try:
        reused = ql.prepare_database(dbname, args.clips, args.refill, clip_list.PROJECT, clip_list.MARKER)
        ql.configure_django(dbname, data_dir)
        reused = ql.migrate(dbname, args.clips, reused)
        fill_s = ql.fill_unless_reused(dbname, args.clips, reused, clip_list.fill)
        return run(args, fill_s)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(args, fill_s: float) -> int:
    from django.db import connection
    from django.template.loader import render_to_string
    from django.test import RequestFactory

    from annotations import dashboard_views
    from annotations.models import Clip, Project
    from annotations.services import dashboard, gold, quality
    from annotations.services.vocabulary import project_vocabulary

    project = Project.objects.get(name=clip_list.PROJECT)
    clips = Clip.objects.filter(project=project).count()
    print(f"clips: {clips:,}  (fill: {'reused' if not fill_s else f'{fill_s:.0f} s'})", flush=True)

    vocabulary = project_vocabulary(project)
    parts = {
        "progress": lambda: dashboard.progress(project),
        "throughput": lambda: dashboard.throughput(project),
        "agreement": lambda: quality.project_agreement(project, vocabulary),
        "labels": lambda: quality.label_distribution(project, "all", vocabulary),
        "models": lambda: quality.model_quality(project, split="test", vocabulary=vocabulary),
        "gold": lambda: gold.gold_accuracy(project),
        "drift": lambda: dashboard.drift(project),
    }
    part_s = {}
    for name, fn in parts.items():
        _, part_s[name] = timed(fn)
        print(f"  compute {name}: {part_s[name]:.2f} s", flush=True)
    row, refresh_s = timed(dashboard.refresh, project)
    print(f"compute + store (the beat task): {refresh_s:.1f} s", flush=True)

    request = RequestFactory().get(f"/p/{project.slug}/dashboard/")

    def page() -> str:
        data, computed_at = dashboard.figures_for(project)
        context = {"project": project, "states": data["states"], "computed_at": computed_at,
                   "pending": False, **dashboard_views.sections(data)}
        return render_to_string("annotations/dashboard.html", context, request=request)

    # No collectstatic here: plain static URLs instead of the manifest's (a dict lookup in production).
    from django.conf import settings
    from django.test.utils import override_settings

    plain = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    override_settings(STORAGES=plain).enable()
    page()  # warm the template cache
    cur = connection.cursor()
    page_ms, base_ms = [], []
    for _ in range(args.reps):
        started = time.perf_counter()
        cur.execute("SELECT 1")
        cur.fetchone()
        base_ms.append(1000 * (time.perf_counter() - started))
        html, seconds = timed(page)
        page_ms.append(1000 * seconds)
    median, p95 = statistics.median(page_ms), sorted(page_ms)[max(0, round(0.95 * len(page_ms)) - 1)]
    base = statistics.median(base_ms)
    print(f"page: median {median:.1f} ms, p95 {p95:.1f} ms ({len(html):,} bytes, {html.count('<svg')} plots); "
          f"SELECT 1 median {base:.2f} ms -> {median / base:.0f}x SELECT 1; "
          f"the compute it avoids: {refresh_s * 1000 / median:.0f}x the page", flush=True)
    print(json.dumps({"clips": clips, "compute_s": round(refresh_s, 3),
                      "parts_s": {k: round(v, 3) for k, v in part_s.items()},
                      "page_ms": {"median": round(median, 2), "p95": round(p95, 2)},
                      "select1_ms": round(base, 3), "page_vs_select1": round(median / base, 1),
                      "compute_vs_page": round(refresh_s * 1000 / median, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
