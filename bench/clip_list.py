"""The managers' clip list at a million clips on PostgreSQL: every filter, both orders, first and deep pages,
against a bare SELECT 1.

    python bench/clip_list.py [--clips 1000000] [--reps 20] [--depth 20] [--only TEXT] [--explain 4]
        [--migrate-to MIGRATION] [--db NAME] [--refill]

Sets itself up with bench/queue_latency.py's code: connects to postgres://postgres@127.0.0.1:5432
(AFFECTLOOP_BENCH_PG overrides), creates its own database (default affectloop_bench_clips, so the queue
bench's resets never touch it), migrates it (--migrate-to: to that annotations migration instead, e.g.
0012_clip_review_request for the figures before 0013) and fills it in set-based SQL, reused by later runs.
On top of the queue bench's clips and fused predictions: varied status and label state (the head of the
priority order submitted or verified, as after weeks of work), disagreement, two more backends with several
model versions (one rare), annotations by 20 annotators plus a new hire with a handful, accept reviews of
the verified clips, and the ClipLabel rows services.clip_index derives (model with scores, human, verified;
canonical terms and families), including a rare proposed term.

Each case is a GET query of the list, run as the view runs it (ClipFilter(GET, queryset, project).qs, then
selectors.clip_page) on one connection, each page timed --reps times with a SELECT 1 round trip timed just
before it (the baseline). Pages: the first, and the one after following the cursor --depth pages; the
unfiltered cases also a page half way down the order. Untimed: the queries of each page
(CaptureQueriesContext: how many, and none may COUNT), EXPLAIN of each page query (a seq scan on a clip,
label, prediction or annotation table is reported) and EXPLAIN (ANALYZE, BUFFERS) of the slowest pages.
The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

# The queue bench's set-up (database, Django, set-based fill) is shared, not copied.
import queue_latency as ql

PROJECT = "Clip list bench"
MARKER = "clip list bench fill: {clips} clips, complete"
ANNOTATORS = 20
NEW_HIRE = "new-hire"
RARE_TERM = "saudade"  # proposed by an annotator on a few dozen clips: not in the vocabulary
GOAL_MS = 50.0
BIG_TABLES = {"annotations_clip", "annotations_cliplabel", "annotations_prediction", "annotations_annotation",
              "annotations_review"}

# Clip columns, in terms of g (the clip's number) as in queue_latency.fill. H is the hash behind the
# queue bench's priority; states follow it, so the head of the priority order is done work.
H = "(((g::bigint * 2654435761) %% 1000003) / 1000003.0)"
DISAGREEMENT = (f"CASE WHEN g %% 10 = 0 OR g %% 200 = 1 THEN NULL ELSE "
                f"round((0.5 * {H} + 0.5 * ((g::bigint * 40503) %% 1009) / 1009.0)::numeric, 3)::float8 END")
CLIP_COLUMNS = {
    "status": "CASE WHEN g %% 200 = 0 THEN 'failed' WHEN g %% 200 = 1 THEN 'processing' ELSE 'ready' END",
    "label_state": (f"CASE WHEN g %% 200 IN (0, 1) THEN 'unlabeled' "
                    f"WHEN g %% 10 = 0 THEN (CASE WHEN g %% 20 = 0 THEN 'unlabeled' ELSE 'prelabeled' END) "
                    f"WHEN {H} >= 0.85 THEN (CASE WHEN g %% 3 = 0 THEN 'verified' ELSE 'submitted' END) "
                    f"WHEN {H} >= 0.84 THEN 'in_progress' ELSE 'prelabeled' END"),
    "priority": f"CASE WHEN g %% 10 = 0 OR g %% 200 = 1 THEN NULL ELSE round({H}, 4)::float8 END",
    "disagreement": DISAGREEMENT,
    "al_signals": f"jsonb_build_object('strategy', 'bench', 'disagreement', {DISAGREEMENT})",
}


# --- the fill ----------------------------------------------------------------------------------------------
def fill(clips: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from annotations.models import Annotation, ClipLabel, EmotionTerm, Prediction, Review, Role
    from annotations.services.projects import set_membership

    project = ql.fill(clips, project_name=PROJECT, marker=None, clip_columns=CLIP_COLUMNS)
    User = get_user_model()
    users = []
    for name, role in ([(f"annotator-{i:02d}", Role.ANNOTATOR) for i in range(ANNOTATORS)]
                       + [(NEW_HIRE, Role.ANNOTATOR), ("reviewer", Role.REVIEWER)]):
        user, _ = User.objects.get_or_create(username=name)
        user.set_unusable_password()
        user.save()
        set_membership(project=project, user=user, role=role)
        users.append(user)
    rows = list(EmotionTerm.objects.filter(project=project, kind=EmotionTerm.Kind.TERM).order_by("term")
                .values_list("term", "family"))
    base = {"p": project.pk, "t": [t for t, _ in rows], "f": [f for _, f in rows],
            "u": [u.pk for u in users[:ANNOTATORS]], "new_hire": users[ANNOTATORS].pk,
            "reviewer": users[ANNOTATORS + 1].pk, "rare": RARE_TERM}
    # t and f are the vocabulary's terms (sorted, as the fused predictions index them) and their families.
    arrays = ("(SELECT %(t)s::text[] AS t, %(f)s::text[] AS f, cardinality(%(t)s::text[]) AS n, "
              "%(u)s::bigint[] AS u) v")
    span = "c.project_id = %(p)s AND c.id BETWEEN %(lo)s AND %(hi)s"
    a1 = "u[1 + (c.id * 31) %% 20]"
    a2 = "CASE WHEN c.id %% 4999 = 0 THEN %(new_hire)s ELSE u[1 + (c.id * 31 + 1 + c.id %% 19) %% 20] END"
    human_term = ("CASE WHEN k = 1 THEN t[1 + c.id %% n] WHEN c.id %% 6007 = 0 THEN %(rare)s "
                  "ELSE t[1 + (c.id * 13 + 5) %% n] END")
    human_family = ("CASE WHEN k = 1 THEN f[1 + c.id %% n] WHEN c.id %% 6007 = 0 THEN 'unassigned' "
                    "ELSE f[1 + (c.id * 13 + 5) %% n] END")
    done = "c.label_state IN ('submitted', 'verified')"
    steps = [
        # Two more backends: internvl on every ready clip (two versions), affectgpt on one in ten (one
        # version on a tenth of a percent: a rare one to filter on).
        (Prediction, {"clip_id": "c.id", "backend": "'internvl'",
                      "model_version": "CASE WHEN c.id %% 5 = 0 THEN 'internvl:2025-06' ELSE 'internvl:2025-01' END",
                      "labels": "jsonb_build_array(jsonb_build_object('term', t[1 + c.id %% n], 'score', 0.7))",
                      "seconds": "1.5", "created_at": "now()"},
         f"annotations_clip c, {arrays} WHERE {span} AND c.status = 'ready'"),
        (Prediction, {"clip_id": "c.id", "backend": "'affectgpt'",
                      "model_version": "CASE WHEN c.id %% 1000 = 7 THEN 'affectgpt:v0-rc' ELSE 'affectgpt:v1' END",
                      "labels": "jsonb_build_array(jsonb_build_object('term', t[1 + (c.id * 7 + 3) %% n]))",
                      "seconds": "2.5", "created_at": "now()"},
         f"annotations_clip c, {arrays} WHERE {span} AND c.status = 'ready' AND (c.id %% 10 = 3 OR c.id %% 1000 = 7)"),
        # Two submitted annotations per submitted or verified clip, one draft per clip in progress.
        (Annotation, {"clip_id": "c.id", "annotator_id": f"CASE WHEN k = 1 THEN {a1} ELSE {a2} END",
                      "labels": f"CASE WHEN c.label_state = 'in_progress' THEN '[]'::jsonb "
                                f"ELSE jsonb_build_array(jsonb_build_object('term', {human_term})) END",
                      "status": "CASE WHEN c.label_state = 'in_progress' THEN 'draft' ELSE 'submitted' END",
                      "version": "1", "lead_time": "30.0", "created_at": "now()", "updated_at": "now()",
                      "submitted_at": "CASE WHEN c.label_state = 'in_progress' THEN NULL ELSE now() END"},
         (f"annotations_clip c CROSS JOIN generate_series(1, 2) k, {arrays} WHERE {span} "
          f"AND ({done} OR (c.label_state = 'in_progress' AND k = 1))")),
        # The verified clips: their first annotation accepted.
        (Review, {"annotation_id": "a.id", "reviewer_id": "%(reviewer)s", "decision": "'accept'",
                  "annotation_version": "1", "created_at": "now()"},
         (f"annotations_clip c JOIN annotations_annotation a ON a.clip_id = c.id, {arrays} WHERE {span} "
          f"AND c.label_state = 'verified' AND a.annotator_id = {a1}")),
        # ClipLabel as services.clip_index derives it: the fused prediction's two terms with their scores ...
        (ClipLabel, {"clip_id": "c.id", "project_id": "c.project_id", "source": "'model'",
                     "term": "CASE WHEN k = 1 THEN t[1 + c.id %% n] ELSE t[1 + (c.id * 7 + 3) %% n] END",
                     "family": "CASE WHEN k = 1 THEN f[1 + c.id %% n] ELSE f[1 + (c.id * 7 + 3) %% n] END",
                     "score": "CASE WHEN k = 1 THEN 0.5 + (c.id %% 50) / 100.0 ELSE 0.4 END"},
         f"annotations_clip c CROSS JOIN generate_series(1, 2) k, {arrays} WHERE {span}"),
        # ... the submitted annotations' terms ...
        (ClipLabel, {"clip_id": "c.id", "project_id": "c.project_id", "source": "'human'",
                     "term": human_term, "family": human_family},
         f"annotations_clip c CROSS JOIN generate_series(1, 2) k, {arrays} WHERE {span} AND {done}"),
        # ... and the accepted annotation's.
        (ClipLabel, {"clip_id": "c.id", "project_id": "c.project_id", "source": "'verified'",
                     "term": "t[1 + c.id %% n]", "family": "f[1 + c.id %% n]"},
         f"annotations_clip c, {arrays} WHERE {span} AND c.label_state = 'verified'"),
    ]
    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SELECT min(id), max(id) FROM annotations_clip WHERE project_id = %s", [project.pk])
        first, last = cur.fetchone()
    for lo in range(first, last + 1, ql.CHUNK):
        hi = min(lo + ql.CHUNK - 1, last)
        t = time.perf_counter()
        n = [ql.insert_select(model, known, source, {**base, "lo": lo, "hi": hi})
             for model, known, source in steps]
        print(f"  clips {lo:,}-{hi:,}: {n[0] + n[1]:,} predictions, {n[2]:,} annotations, {n[3]:,} reviews, "
              f"{n[4] + n[5] + n[6]:,} label rows: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    with connection.cursor() as cur:
        for table in ("annotations_prediction", "annotations_annotation", "annotations_review",
                      "annotations_cliplabel", "auth_user"):
            cur.execute(f"VACUUM ANALYZE {table}")
    print(f"  vacuum analyze: {time.perf_counter() - t:.1f} s", flush=True)
    project.description = MARKER.format(clips=clips)
    project.save(update_fields=["description"])


# --- the cases ---------------------------------------------------------------------------------------------
def cases(terms: dict) -> list[tuple[str, dict]]:
    """(name, GET filter parameters). Shares: see the fill; label terms cover ~0.6% of clips each from the
    model alone, families 2-30%."""
    term, family = terms["term"], terms["family"]
    return [
        ("no filter", {}),
        ("status=failed", {"status": "failed"}),
        ("state=verified", {"label_state": "verified"}),
        ("state=prelabeled", {"label_state": "prelabeled"}),
        ("split=test", {"split": "test"}),
        (f"label={term}", {"label": term}),
        (f"label={term} verified", {"label": term, "label_source": "verified"}),
        (f"label={family} (family)", {"label": family}),
        (f"label={RARE_TERM} (rare)", {"label": RARE_TERM}),
        ("label=no-such-term", {"label": "no-such-term"}),
        ("model=internvl:2025-06", {"model": "internvl:2025-06"}),
        ("model=affectgpt:v0-rc (rare)", {"model": "affectgpt:v0-rc"}),
        ("model=no-such-version", {"model": "no-such-version"}),
        ("score>=0.9", {"min_score": "0.9"}),
        ("disagreement>=0.8", {"min_disagreement": "0.8"}),
        ("annotator=annotator-07", {"annotator": "annotator-07"}),
        (f"annotator={NEW_HIRE} (few)", {"annotator": NEW_HIRE}),
        ("annotator=nobody", {"annotator": "nobody"}),
        ("name^=bench/00012", {"name": "bench/00012"}),
        (f"state+split+label={family}", {"label_state": "submitted", "split": "train", "label": family}),
        (f"annotator+label={term}", {"annotator": "annotator-03", "label": term}),
        ("score+disagreement+split", {"min_score": "0.9", "min_disagreement": "0.5", "split": "val"}),
        ("model+state=prelabeled", {"model": "internvl:2025-06", "label_state": "prelabeled"}),
    ]


def run_page(project, get: dict, order: str, after: str, size: int):
    """What work_views.clip_list does for a GET, minus the template."""
    from django.http import QueryDict

    from annotations import selectors
    from annotations.filters import ClipFilter

    query = {**get, "order": order, **({"after": after} if after else {})}
    params = QueryDict(urlencode(query))
    clip_filter = ClipFilter(params or None, queryset=project.clips.all(), project=project)
    clips = clip_filter.qs if clip_filter.is_bound and clip_filter.is_valid() else project.clips.all()
    if clip_filter.is_bound and not clip_filter.is_valid():
        raise SystemExit(f"the filter rejects {get}: {clip_filter.errors.as_json()}")
    return selectors.clip_page(clips, order=order, after=after, size=size)


def select1(cur) -> float:
    t = time.perf_counter()
    cur.execute("SELECT 1")
    cur.fetchone()
    return (time.perf_counter() - t) * 1000


COUNT_RE = re.compile(r"\bCOUNT\s*\(", re.IGNORECASE)


def capture(project, get, order, after, size) -> tuple[list[str], dict]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        page = run_page(project, get, order, after, size)
    return [q["sql"] for q in ctx.captured_queries], page


def seq_scans(sql: str) -> set[str]:
    from django.db import connection

    found = set()

    def walk(node):
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in BIG_TABLES:
            found.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    with connection.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql)
        plan = cur.fetchone()[0]
    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    return found


def page_queries(sqls: list[str]) -> list[str]:
    """The page's own queries (not the vocabulary load a label filter does once per process)."""
    return [s for s in sqls if s.lstrip().upper().startswith("SELECT") and "annotations_emotionterm" not in s]


def pct(values, q):
    return ql.pct(values, q)


def measure(project, get, order, after, size, reps, cur, base_ms) -> list[float]:
    times = []
    for i in range(reps):
        base_ms.append(select1(cur))
        t = time.perf_counter()
        run_page(project, get, order, after, size)
        times.append((time.perf_counter() - t) * 1000)
        if i >= 2 and min(times) > 500:
            break  # a slow page is slow: five runs do not change that, twenty take minutes
    return times


def mid_cursor(project, order: str) -> str:
    """The cursor the list hands out at half way down the unfiltered order."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM annotations_clip WHERE project_id = %s", [project.pk])
        half = cur.fetchone()[0] // 2
        if order == "priority":
            cur.execute("SELECT priority, id FROM annotations_clip WHERE project_id = %s "
                        "ORDER BY priority DESC NULLS LAST, id OFFSET %s LIMIT 1", [project.pk, half])
            p, pk = cur.fetchone()
            return f"{'none' if p is None else repr(p)}:{pk}"
        cur.execute("SELECT id FROM annotations_clip WHERE project_id = %s ORDER BY id DESC OFFSET %s LIMIT 1",
                    [project.pk, half])
        return str(cur.fetchone()[0])


def view_check(project, get_list) -> list[dict]:
    """The real view through the test client: its queries per page (session and user included)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings
    from django.urls import reverse

    owner = get_user_model().objects.get(username="bench-owner")
    client = Client(SERVER_NAME="localhost")
    client.force_login(owner)
    url = reverse("annotations:clip-list", args=[project.slug])
    out = []
    # No collectstatic here: the plain storage, so the templates' static tags render.
    plain = override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}})
    for name, get in get_list:
        try:
            with plain:
                client.get(url, get)  # warm: the vocabulary cache, as in a running process
            t = time.perf_counter()
            with plain, CaptureQueriesContext(connection) as ctx:
                response = client.get(url, get)
            ms = (time.perf_counter() - t) * 1000
            sqls = [q["sql"] for q in ctx.captured_queries]
            out.append({"case": name, "status": response.status_code, "queries": len(sqls), "ms": round(ms, 1),
                        "count": sum(bool(COUNT_RE.search(s)) for s in sqls)})
        except Exception as exc:  # noqa: BLE001 -- the view is edited by others: report, do not abort
            out.append({"case": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    return out


# --- the run -----------------------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=20, help="timed runs per page")
    parser.add_argument("--depth", type=int, default=20, help="pages to follow the cursor for the deep page")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument("--explain", type=int, default=4, help="EXPLAIN ANALYZE the N slowest pages")
    parser.add_argument("--migrate-to", help="annotations migration to migrate to (default: the latest)")
    parser.add_argument("--db", help="database name (default affectloop_bench_clips, plus _N for a size "
                                      "other than the default)")
    parser.add_argument("--refill", action="store_true", help="drop and fill the database again")
    args = parser.parse_args()
    dbname = args.db or "affectloop_bench_clips" + ("" if args.clips == 1_000_000 else f"_{args.clips}")

    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="affectloop-bench-clips-"))
    try:
        reused = ql.prepare_database(dbname, args.clips, args.refill, PROJECT, MARKER)
        ql.configure_django(dbname, data_dir)
        reused = ql.migrate(dbname, args.clips, reused, args.migrate_to)
        fill_s = ql.fill_unless_reused(dbname, args.clips, reused, fill)

        from django.db import connection
        from django.db.migrations.recorder import MigrationRecorder

        from annotations.models import Clip, ClipLabel, EmotionTerm, Project
        from annotations.work_views import PAGE

        project = Project.objects.get(name=PROJECT)
        applied = (MigrationRecorder.Migration.objects.filter(app="annotations").order_by("-name")
                   .values_list("name", flat=True).first())
        with connection.cursor() as cur:
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename IN ('annotations_clip', "
                        "'annotations_cliplabel', 'annotations_annotation', 'annotations_prediction') "
                        "ORDER BY indexname")
            indexes = [r[0] for r in cur.fetchall()]
        n_clips = Clip.objects.filter(project=project).count()
        n_labels = ClipLabel.objects.filter(project=project).count()
        terms = {"term": "happy", "family": "fear"}
        assert EmotionTerm.objects.filter(project=project, term="happy").exists()
        print(f"clips: {n_clips:,}  label rows: {n_labels:,}  page: {PAGE}  migration: {applied}  "
              f"reps: {args.reps}  depth: {args.depth}", flush=True)

        todo = [(name, get, order) for name, get in cases(terms) for order in ("new", "priority")
                if not args.only or args.only in name]
        results, base_ms, sqls_by_page = [], [], {}
        cur = connection.cursor()
        for name, get, order in todo:
            t0 = time.perf_counter()
            # Warm and count: the first page's queries, then follow the cursor (untimed) to the deep page.
            sqls, page = capture(project, get, order, "", PAGE)
            pages = {"first": ("", sqls, len(page["rows"]))}
            after, depth = page["cursor"], 0
            while after and depth < args.depth:
                page = run_page(project, get, order, after, PAGE)
                depth += 1
                if not page["cursor"]:
                    break
                after = page["cursor"]
            if depth:
                sqls, page = capture(project, get, order, after, PAGE)
                pages[f"p{depth + 1}"] = (after, sqls, len(page["rows"]))
            if not get:
                after = mid_cursor(project, order)
                sqls, page = capture(project, get, order, after, PAGE)
                pages["mid"] = (after, sqls, len(page["rows"]))
            row = {"case": name, "order": order, "pages": {}}
            for label, (after, sqls, n_rows) in pages.items():
                times = measure(project, get, order, after, PAGE, args.reps, cur, base_ms)
                own = page_queries(sqls)
                scans = set().union(*(seq_scans(s) for s in own)) if own else set()
                row["pages"][label] = {"p50": pct(times, 50), "p95": pct(times, 95), "n": len(times),
                                       "rows": n_rows, "queries": len(sqls),
                                       "count": sum(bool(COUNT_RE.search(s)) for s in sqls),
                                       "seq": sorted(scans), "after": after}
                sqls_by_page[(name, order, label)] = own
            results.append(row)
            worst = max(p["p95"] for p in row["pages"].values())
            print(f"  {name} / {order}: {worst:.1f} ms worst p95 ({time.perf_counter() - t0:.1f} s)", flush=True)
        cur.close()

        base = pct(base_ms, 95)
        print(f"\nSELECT 1: p50 {pct(base_ms, 50):.3f} ms, p95 {base:.3f} ms ({len(base_ms)} round trips, "
              f"each just before a timed page)")
        print(f"{'case':34} {'order':8} {'page':5} {'rows':>4} {'q':>2} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'p95/SELECT1':>11}  seq scans")
        flat = []
        for row in results:
            for label, p in row["pages"].items():
                flat.append((row["case"], row["order"], label, p))
                mark = " >50ms" if p["p95"] > GOAL_MS else ""
                print(f"{row['case'][:34]:34} {row['order']:8} {label:5} {p['rows']:4d} {p['queries']:2d} "
                      f"{p['p50']:8.2f} {p['p95']:8.2f} {p['p95'] / base:10.1f}x  "
                      f"{','.join(s.replace('annotations_', '') for s in p['seq']) or '-'}{mark}")
        counts = sum(p["count"] for *_, p in flat)
        qmax = max(p["queries"] for *_, p in flat)
        print(f"\nqueries per page: {min(p['queries'] for *_, p in flat)}-{qmax} "
              f"(clip page + its labels; a label filter's first page also loads the vocabulary once); "
              f"queries with COUNT: {counts}")
        seq = sorted({s for *_, p in flat for s in p["seq"]})
        print(f"seq scans of {', '.join(sorted(BIG_TABLES))} in any page's plan: "
              f"{', '.join(seq) if seq else 'none'}")

        slowest = sorted(flat, key=lambda x: -x[3]["p95"])[:args.explain]
        for name, order, label, p in slowest:
            print(f"\nEXPLAIN (ANALYZE, BUFFERS): {name} / {order} / {label} page (p95 {p['p95']:.1f} ms)")
            for sql in sqls_by_page[(name, order, label)][:1]:
                with connection.cursor() as c:
                    c.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                    plan = "\n".join(r[0] for r in c.fetchall())
                print("    " + sql[:600] + (" ..." if len(sql) > 600 else ""))
                print("\n".join("    " + line for line in plan.splitlines()))
                seq_here = [t for t in ("annotations_clip", "annotations_cliplabel")
                            if re.search(rf"Seq Scan on {t}\b", plan)]
                print(f"    seq scan of annotations_clip / annotations_cliplabel: "
                      f"{', '.join(seq_here) if seq_here else 'no'}")

        view = view_check(project, [("no filter / new", {}), ("no filter / priority", {"order": "priority"}),
                                    ("label / new", {"label": terms["term"]})])
        print("\nthe view itself (test client, session and user included):")
        for v in view:
            print(f"    {v}")

        worst_name, worst_order, worst_label, worst = max(flat, key=lambda x: x[3]["p95"])
        total_s = time.perf_counter() - started
        print(f"\nfill {fill_s:.1f} s{' (reused)' if reused else ''}, whole run {total_s:.1f} s")
        r = ql.r
        result = {
            "clips": n_clips, "label_rows": n_labels, "page_size": PAGE, "migration": applied,
            "select1_p95_ms": r(base, 3), "select1_p50_ms": r(pct(base_ms, 50), 3),
            "cases": {f"{row['case']} / {row['order']}": {
                f"{label}_p95_ms": r(p["p95"]) for label, p in row["pages"].items()} for row in results},
            "vs_select1": {f"{row['case']} / {row['order']}": {
                label: r(p["p95"] / base, 1) for label, p in row["pages"].items()} for row in results},
            "worst": {"case": f"{worst_name} / {worst_order}", "page": worst_label, "p95_ms": r(worst["p95"]),
                      "vs_select1": r(worst["p95"] / base, 1)},
            "over_50ms": sorted(f"{n} / {o} / {lab}" for n, o, lab, p in flat if p["p95"] > GOAL_MS),
            "queries_per_page_max": qmax, "count_queries": counts, "seq_scans": seq,
            "view": view, "indexes": indexes,
            "fill_s": r(fill_s, 1), "fill_reused": reused, "total_s": r(total_s, 1),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
