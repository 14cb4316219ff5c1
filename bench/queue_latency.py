"""The annotation queue at scale on PostgreSQL: claim and autosave latency against a bare SELECT 1.

    python bench/queue_latency.py [--clips 1000000] [--annotators 16] [--seconds 120]
        [--saturated-seconds 20] [--overlap 2] [--saves 3] [--think 0.5,2.0] [--done 0] [--db NAME] [--refill]

Sets itself up: connects to postgres://postgres@127.0.0.1:5432 (AFFECTLOOP_BENCH_PG overrides), creates its
own database, migrates it, and fills it with set-based SQL (INSERT ... SELECT generate_series): one project
with --clips ready, pre-labelled clips (spread priorities, one in ten NULL) and a fused Prediction each. The
fill is reused by later runs (a marker in the project's description names the clip count; a fill whose
migrations were rewritten since is made again). Each run empties the annotations, leases and skips first, so
every run starts from the same queue; --done N marks the first N clips in queue order submitted, as after
weeks of work. Django runs in-process with a generated secret key, a temporary data dir and the memory broker.

Then, in one run, from --annotators threads (one database connection each):
  1. think phase (--seconds): each annotator, with a think time drawn from --think before every action,
     claims (services.queue.next_clip), opens the draft (annotating.start), autosaves it --saves times
     (annotating.save_draft) and submits (annotating.submit): the service functions the views call. Before
     each claim and each save the same thread times a bare `SELECT 1` round trip: the baseline;
  2. saturated phase (--saturated-seconds): first SELECT 1 alone, then the same cycle, both without think
     time: throughput (claims/s, saves/s) against SELECT 1/s, and this process's CPU use (all threads share
     one GIL: near one core means the Python side, not the database, sets the pace).
Finally it checks the database: per clip, distinct annotators with a submitted annotation or a live annotate
lease must be <= overlap; the claims recorded in memory are checked the same way (plus nobody twice).
The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg
from psycopg import sql

SERVER = os.environ.get("AFFECTLOOP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
PROJECT = "Queue bench"
MARKER = "queue bench fill: {clips} clips, complete"
CHUNK = 200_000  # rows per INSERT: progress lines, and no single huge transaction


# --- the database ------------------------------------------------------------------------------------------
def _filled(dbname: str, clips: int, project: str = PROJECT, marker: str = MARKER) -> bool:
    try:
        with psycopg.connect(f"{SERVER}/{dbname}") as conn:
            row = conn.execute("SELECT description FROM annotations_project WHERE name = %s",
                               [project]).fetchone()
    except psycopg.Error:
        return False  # not migrated yet, or an interrupted first run
    return row is not None and row[0] == marker.format(clips=clips)


def prepare_database(dbname: str, clips: int, refill: bool, project: str = PROJECT,
                     marker: str = MARKER) -> bool:
    """Create the bench database unless a complete fill of this size is there. True when it is reused.
    (bench/clip_list.py shares this set-up with its own project name and marker.)"""
    if not refill and _filled(dbname, clips, project, marker):
        return True
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        # A partial or different fill is cheaper to redo than to repair.
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return False


def fill_unless_reused(dbname: str, clips: int, reused: bool, fill) -> float:
    """Run `fill(clips)` on a database that was not reused; the seconds it took (0 when reused)."""
    if reused:
        print(f"reusing the fill in {dbname}", flush=True)
        return 0.0
    print(f"filling {dbname} with {clips:,} clips ...", flush=True)
    t = time.perf_counter()
    fill(clips)
    seconds = time.perf_counter() - t
    print(f"fill: {seconds:.1f} s", flush=True)
    return seconds


def configure_django(dbname: str, data_dir: Path) -> None:
    for key in ("DJANGO_SECRET_KEY_FILE", "AFFECTLOOP_CACHE_URL"):
        os.environ.pop(key, None)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"{SERVER}/{dbname}",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "AFFECTLOOP_DATA_DIR": str(data_dir),
        "CELERY_BROKER_URL": "memory://",
    })
    import django

    django.setup()


def migrate(dbname: str, clips: int, reused: bool, target: str | None = None) -> bool:
    """Migrate the database; a reused one whose history no longer matches the migrations in the tree (a
    migration rewritten since it was applied) is filled again. Returns whether the fill is still reused.
    `target`: an annotations migration to migrate to (forwards or backwards) instead of the latest."""
    from django.core.management import call_command
    from django.db import connections

    args = ("annotations", target) if target else ()
    try:
        call_command("migrate", *args, verbosity=0, interactive=False)
        return reused
    except Exception as exc:  # any failure on a fresh database is real: raised below
        if not reused:
            raise
        print(f"migrating the reused fill failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
              f"filling it again", flush=True)
    connections.close_all()
    prepare_database(dbname, clips, refill=True)
    call_command("migrate", *args, verbosity=0, interactive=False)
    return False


def insert_select(model, known: dict[str, str], source: str, params: dict) -> int:
    """INSERT INTO model's table SELECT ... FROM source: `known` gives SQL per column; every other column gets
    the model field's default (the schema grows under this script: a new column must not break the fill)."""
    from django.db import connection

    cols, exprs = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        cols.append(connection.ops.quote_name(field.column))
        if field.column in known:
            exprs.append(known[field.column])
            continue
        value = field.get_db_prep_save(field.get_default(), connection)
        if value is None:
            exprs.append("NULL")
        else:
            params[f"default_{field.column}"] = value
            exprs.append(f"%(default_{field.column})s")
    missing = set(known) - {f.column for f in model._meta.concrete_fields}
    if missing:
        raise SystemExit(f"{model.__name__} has no column {', '.join(sorted(missing))}: update the bench")
    with connection.cursor() as cur:
        cur.execute(f"INSERT INTO {model._meta.db_table} ({', '.join(cols)}) "
                    f"SELECT {', '.join(exprs)} FROM {source}", params)
        return cur.rowcount


def split_sql(sha: str, ratios) -> str:
    """ml.splits.split_of(sha256) in SQL: the salted hash's first 15 hex digits as a fraction."""
    total = ratios.train + ratios.val + ratios.test
    salt = "'\\x" + b"affectloop-split\0".hex() + "'::bytea"
    point = (f"('x' || substr(encode(sha256({salt} || convert_to({sha}, 'UTF8')), 'hex'), 1, 15))"
             f"::bit(60)::bigint / {float(16 ** 15)}")
    return (f"CASE WHEN {point} < {ratios.train / total!r} THEN 'train' "
            f"WHEN {point} < {(ratios.train + ratios.val) / total!r} THEN 'val' ELSE 'test' END")


def fill(clips: int, project_name: str = PROJECT, marker: str | None = MARKER,
         clip_columns: dict | None = None):
    """One project, `clips` ready pre-labelled clips and a fused prediction each, in set-based SQL. Returns
    the project. `clip_columns` overrides the SQL of some clip columns (in terms of g, the clip's number);
    marker None leaves the project unmarked (the caller adds more and marks it)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from annotations.models import Clip, EmotionTerm, Prediction
    from annotations.project_config import project_config
    from annotations.services.projects import create_project

    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    project = create_project(name=project_name, creator=owner)
    terms = list(EmotionTerm.objects.filter(project=project, kind=EmotionTerm.Kind.TERM)
                 .order_by("term").values_list("term", flat=True))
    # SQL per column; parameters are %(name)s, so a modulo is %%.
    clip_sql = {
        "project_id": "%(project)s", "file": "'clips/bench/' || g || '.mp4'", "thumbnail": "''",
        "original_name": "'bench/' || g || '.mp4'", "name": "'bench/' || lpad(g::text, 7, '0')",
        "source": "'import:folder'", "sha256": "sha", "size_bytes": "1000000 + g %% 5000000",
        "container": "'mp4'", "duration": "2.0 + (g %% 130) / 10.0", "fps": "25", "width": "640",
        "height": "360", "video_codec": "'h264'", "audio_codec": "'aac'", "has_audio": "true",
        "status": "'ready'", "label_state": "'prelabeled'",
        # A deterministic spread rounded to 4 decimals (ties, so id decides), NULL for one clip in ten.
        "priority": "CASE WHEN g %% 10 = 0 THEN NULL "
                    "ELSE round(((g::bigint * 2654435761) %% 1000003) / 1000003.0, 4)::float8 END",
        "al_signals": "'{\"strategy\": \"bench\"}'", "created_at": "now()", "updated_at": "now()",
        "ready_at": "now()",
    }
    if "split" in {f.column for f in Clip._meta.concrete_fields}:
        clip_sql["split"] = split_sql("sha", project_config(project).training.split)
    clip_sql.update(clip_columns or {})
    prediction_sql = {
        "clip_id": "c.id", "backend": "'fused'", "model_version": "'fused:bench'",
        "labels": "jsonb_build_array("
                  "jsonb_build_object('term', t[1 + c.id %% n], 'score', 0.5 + (c.id %% 50) / 100.0,"
                  " 'source', 'fused',"
                  " 'support', jsonb_build_array(jsonb_build_object('backend', 'internvl', 'score', 0.7))),"
                  "jsonb_build_object('term', t[1 + (c.id * 7 + 3) %% n], 'score', 0.4, 'source', 'fused',"
                  " 'support', '[]'::jsonb))",
        "seconds": "0.0", "created_at": "now()",
    }
    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")  # a lost fill is redone: the marker comes last
        cur.execute("SET maintenance_work_mem = '256MB'")
    for lo in range(1, clips + 1, CHUNK):
        hi = min(lo + CHUNK - 1, clips)
        t = time.perf_counter()
        insert_select(Clip, clip_sql,
                      "(SELECT g, encode(sha256(g::text::bytea), 'hex') AS sha "
                      "FROM generate_series(%(lo)s, %(hi)s) AS g) AS s",
                      {"project": project.pk, "lo": lo, "hi": hi})
        insert_select(Prediction, prediction_sql,
                      "annotations_clip c, "
                      "(SELECT %(terms)s::text[] AS t, cardinality(%(terms)s::text[]) AS n) v "
                      "WHERE c.project_id = %(project)s AND c.name BETWEEN %(first)s AND %(last)s",
                      {"project": project.pk, "terms": terms, "first": f"bench/{lo:07d}",
                       "last": f"bench/{hi:07d}"})
        print(f"  clips {lo:,}-{hi:,} with their predictions: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE annotations_clip")
        cur.execute("VACUUM ANALYZE annotations_prediction")
    print(f"  vacuum analyze: {time.perf_counter() - t:.1f} s", flush=True)
    if marker is not None:
        project.description = marker.format(clips=clips)
        project.save(update_fields=["description"])
    return project


def reset_run_state(project, overlap: int, annotators: int, done: int) -> list:
    """Every run starts from the same queue: no annotations, leases or skips; the clips pre-labelled again,
    except the first `done` in queue order, marked submitted (a queue after weeks of work: the claim has to
    pass over them)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from annotations.models import Role
    from annotations.services.projects import set_membership, update_config

    with connection.cursor() as cur:
        # CASCADE: whatever else refers to these rows (derived indexes added later) goes with them.
        cur.execute("TRUNCATE annotations_review, annotations_annotationrevision, annotations_annotation, "
                    "annotations_cliplease, annotations_clipskip CASCADE")
        head = ("WITH head AS (SELECT id FROM annotations_clip WHERE project_id = %(p)s "
                "ORDER BY priority DESC NULLS LAST, id LIMIT %(done)s) ")
        params = {"p": project.pk, "done": done}
        # Two statements that touch only the rows in the wrong state: a rerun with the same --done is cheap.
        cur.execute(head + "UPDATE annotations_clip c SET label_state = 'prelabeled', verified_at = NULL "
                    "WHERE c.project_id = %(p)s AND c.label_state <> 'prelabeled' "
                    "AND NOT EXISTS (SELECT 1 FROM head WHERE head.id = c.id)", params)
        changed = cur.rowcount
        cur.execute(head + "UPDATE annotations_clip c SET label_state = 'submitted' FROM head "
                    "WHERE c.id = head.id AND c.label_state <> 'submitted'", params)
        if changed + cur.rowcount:
            cur.execute("VACUUM ANALYZE annotations_clip")  # no dead entries left at the queue index's head
    annotation = {"overlap": overlap, "suggestions": "preselect"}  # start() reads the fused prediction
    update_config(project, {**(project.config or {}), "annotation": annotation})
    users = []
    for i in range(annotators):
        # No password: hashing 16 of them would only slow the set-up down.
        user, created = get_user_model().objects.get_or_create(username=f"annotator-{i:02d}")
        if created:
            user.set_unusable_password()
            user.save()
            set_membership(project=project, user=user, role=Role.ANNOTATOR)
        users.append(user)
    return users


# --- the annotators ----------------------------------------------------------------------------------------
class Record:
    def __init__(self):
        self.lock = threading.Lock()
        self.ms = defaultdict(list)  # action -> latencies
        self.claims: list[tuple[int, int]] = []  # (clip, user), every claim of the run
        self.empty = 0
        self.errors: list[str] = []

    def add(self, action: str, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000
        with self.lock:
            self.ms[action].append(ms)


def edit(labels: list[dict], terms: list[str], rng: random.Random) -> list[dict]:
    """One change an annotator makes between autosaves: add a word, or drop one."""
    labels = [dict(x) for x in labels]
    if len(labels) > 1 and rng.random() < 0.4:
        labels.pop(rng.randrange(len(labels)))
    else:
        labels.append({"term": rng.choice(terms), "source": "human", "note": "", "evidence": ["face"]})
    return labels


def annotator(index, user_pk, project_pk, *, deadline, think, saves, probe, terms, record, barrier, seed):
    from django.contrib.auth import get_user_model
    from django.db import connection, connections

    from annotations.models import Project
    from annotations.services import annotating, queue

    rng = random.Random(seed * 1000 + index)

    def pause():
        if think:
            time.sleep(rng.uniform(*think))

    def select1():
        if probe:
            t = time.perf_counter()
            with connection.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            record.add("select1", t)

    try:
        # Loaded in this thread, as a request would: each thread has its own connection and objects.
        user = get_user_model().objects.get(pk=user_pk)
        project = Project.objects.get(pk=project_pk)
        connection.ensure_connection()
        barrier.wait()
        # The deadline is checked before a claim only: a cycle in progress ends in its submit, so no lease
        # outlives the phase and the next phase's first claim is a new one, not a resume.
        while time.monotonic() < deadline():
            pause()
            select1()
            t = time.perf_counter()
            lease = queue.next_clip(user, project)
            record.add("claim", t)
            if lease is None:
                with record.lock:
                    record.empty += 1
                break
            with record.lock:
                record.claims.append((lease.clip_id, user_pk))
            t = time.perf_counter()
            draft = annotating.start(user, lease.clip)
            record.add("start", t)
            labels = draft.labels or [{"term": rng.choice(terms)}]
            for _ in range(saves):
                pause()
                select1()
                labels = edit(labels, terms, rng)
                t = time.perf_counter()
                draft = annotating.save_draft(draft, labels=labels, base_version=draft.version,
                                              lead_time=think[1] if think else 0.1)
                record.add("save", t)
            pause()
            t = time.perf_counter()
            annotating.submit(draft, labels=labels, base_version=draft.version,
                              idempotency_key=uuid.uuid4().hex)
            record.add("submit", t)
    except Exception:  # noqa: BLE001 -- reported with the figures
        with record.lock:
            record.errors.append(traceback.format_exc())
        try:
            barrier.abort()
        except threading.BrokenBarrierError:
            pass
    finally:
        connections.close_all()


def select1_loop(deadline, record, barrier):
    from django.db import connection, connections

    try:
        connection.ensure_connection()
        barrier.wait()
        while time.monotonic() < deadline():
            t = time.perf_counter()
            with connection.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            record.add("select1", t)
    except Exception:  # noqa: BLE001
        with record.lock:
            record.errors.append(traceback.format_exc())
    finally:
        connections.close_all()


def run_threads(n: int, seconds: float, target, **kwargs) -> tuple[Record, float]:
    """Start n threads, release them together, return the record and the phase's wall time (start to the
    last thread's end, so throughput counts the cycles finished after the deadline too)."""
    record = Record()
    start = {}
    # The clock starts when all are ready (each thread has loaded its user and connected), not before.
    barrier = threading.Barrier(n + 1, action=lambda: start.__setitem__("t", time.monotonic()))

    def deadline():
        return start["t"] + seconds

    threads = []
    for i in range(n):
        if target is select1_loop:
            args, kw = (deadline, record, barrier), {}
        else:
            args = (i, kwargs["users"][i].pk, kwargs["project"].pk)
            kw = {k: v for k, v in kwargs.items() if k not in ("users", "project")}
            kw.update(deadline=deadline, record=record, barrier=barrier)
        threads.append(threading.Thread(target=target, args=args, kwargs=kw, daemon=True))
    for th in threads:
        th.start()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        start.setdefault("t", time.monotonic())  # a thread failed before the start; its error is recorded
    for th in threads:
        th.join(seconds + 300)
    if any(th.is_alive() for th in threads):
        record.errors.append("a thread did not finish within 300 s of the deadline")
    return record, time.monotonic() - start["t"]


# --- figures -----------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def r(x, digits=2):
    return None if x is None else round(x, digits)


def double_assigned_memory(claims: list[tuple[int, int]], overlap: int) -> int:
    """Claims that handed a clip to more than `overlap` people, or to someone a second time."""
    per_clip = defaultdict(set)
    repeats = 0
    for clip, user in claims:
        if user in per_clip[clip]:
            repeats += 1
        per_clip[clip].add(user)
    return repeats + sum(max(0, len(users) - overlap) for users in per_clip.values())


def double_assigned_db(project_pk: int, overlap: int) -> int:
    """From the stored state: per clip, distinct annotators who submitted it or hold a live lease on it."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("""
            WITH holders AS (
                SELECT a.clip_id, a.annotator_id AS user_id FROM annotations_annotation a
                JOIN annotations_clip c ON c.id = a.clip_id
                WHERE c.project_id = %(p)s AND a.status = 'submitted'
                UNION
                SELECT l.clip_id, l.user_id FROM annotations_cliplease l
                JOIN annotations_clip c ON c.id = l.clip_id
                WHERE c.project_id = %(p)s AND l.kind = 'annotate' AND l.expires_at > now())
            SELECT coalesce(sum(n - %(overlap)s), 0) FROM (
                SELECT count(*) AS n FROM holders GROUP BY clip_id) per_clip WHERE n > %(overlap)s""",
                    {"p": project_pk, "overlap": overlap})
        return int(cur.fetchone()[0])


def table(record: Record, actions: list[str], base: float | None) -> None:
    print(f"    {'':12} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}   p95 / SELECT 1 p95")
    for action in actions:
        v = record.ms.get(action, [])
        if not v:
            continue
        p95 = pct(v, 95)
        ratio = f"{p95 / base:8.1f}x" if base else ""
        print(f"    {action:12} {len(v):6d} {pct(v, 50):8.2f} {p95:8.2f} {pct(v, 99):8.2f} {max(v):8.2f}"
              f"   {ratio}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120, help="think phase length")
    parser.add_argument("--saturated-seconds", type=float, default=20, help="saturated phase length (0: skip)")
    parser.add_argument("--overlap", type=int, default=2,
                        help="annotators per clip (config.annotation.overlap)")
    parser.add_argument("--saves", type=int, default=3, help="autosaves per clip before the submit")
    parser.add_argument("--think", default="0.5,2.0", help="think time range in seconds, MIN,MAX")
    parser.add_argument("--done", type=int, default=0,
                        help="clips at the head of the queue already submitted (default 0: a fresh queue)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="database name (default affectloop_bench_queue, plus _N for a size "
                                      "other than the default)")
    parser.add_argument("--refill", action="store_true", help="drop and fill the database again")
    args = parser.parse_args()
    think = tuple(float(x) for x in args.think.split(","))
    if len(think) != 2 or not 0 <= think[0] <= think[1]:
        parser.error("--think is MIN,MAX seconds")
    dbname = args.db or "affectloop_bench_queue" + ("" if args.clips == 1_000_000 else f"_{args.clips}")

    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="affectloop-bench-queue-"))
    try:
        t = time.perf_counter()
        reused = prepare_database(dbname, args.clips, args.refill)
        configure_django(dbname, data_dir)
        reused = migrate(dbname, args.clips, reused)
        migrate_s = time.perf_counter() - t
        fill_s = fill_unless_reused(dbname, args.clips, reused, fill)

        from django.db import connection

        from annotations.models import Clip, EmotionTerm, Project

        project = Project.objects.get(name=PROJECT)
        t = time.perf_counter()
        users = reset_run_state(project, args.overlap, args.annotators, args.done)
        reset_s = time.perf_counter() - t
        n_clips = Clip.objects.filter(project=project).count()
        terms = list(EmotionTerm.objects.filter(project=project, kind=EmotionTerm.Kind.TERM)
                     .values_list("term", flat=True))
        connection.close()  # the main thread's connection idles through the phases
        print(f"clips: {n_clips:,}  annotators: {args.annotators}  overlap: {args.overlap}  "
              f"autosaves per clip: {args.saves}  done at the head of the queue: {args.done:,}  "
              f"(set-up {migrate_s:.1f} s, reset {reset_s:.1f} s)", flush=True)

        common = {"users": users, "project": project, "saves": args.saves, "terms": terms, "seed": args.seed}
        t = time.perf_counter()
        think_rec, think_wall = run_threads(args.annotators, args.seconds, annotator, think=think, probe=True,
                                            **common)
        print(f"think phase ({think[0]}-{think[1]} s between actions, {args.seconds:.0f} s, "
              f"{think_wall:.1f} s with the last cycles):", flush=True)
        base = pct(think_rec.ms["select1"], 95)
        table(think_rec, ["select1", "claim", "save", "start", "submit"], base)

        sat = {}
        sat_rec = Record()
        if args.saturated_seconds > 0:
            sel_seconds = min(5.0, args.saturated_seconds)
            sel_rec, sel_wall = run_threads(args.annotators, sel_seconds, select1_loop)
            cpu = time.process_time()
            sat_rec, sat_wall = run_threads(args.annotators, args.saturated_seconds, annotator, think=None,
                                            probe=False, **common)
            # Near 1.0: this process's Python (one GIL, one core) is the limit, not the database.
            client_cpu = (time.process_time() - cpu) / sat_wall
            sel_rate = len(sel_rec.ms["select1"]) / sel_wall
            claims_rate = len(sat_rec.ms["claim"]) / sat_wall
            saves_rate = len(sat_rec.ms["save"]) / sat_wall
            submits_rate = len(sat_rec.ms["submit"]) / sat_wall
            print(f"saturated ({args.annotators} threads, no think time, {args.saturated_seconds:.0f} s):")
            print(f"    SELECT 1     {sel_rate:9.1f} /s  (alone, {sel_wall:.1f} s)")
            print(f"    claims       {claims_rate:9.1f} /s  = {claims_rate / sel_rate:.4f}x SELECT 1/s")
            print(f"    saves        {saves_rate:9.1f} /s  = {saves_rate / sel_rate:.4f}x SELECT 1/s")
            print(f"    submits      {submits_rate:9.1f} /s")
            print(f"    this process's CPU: {client_cpu:.2f} cores (its threads share one GIL)")
            table(sat_rec, ["claim", "save", "start", "submit"], pct(sel_rec.ms["select1"], 95))
            sat = {"saturated_seconds": r(sat_wall, 1), "saturated_select1_per_s": r(sel_rate, 1),
                   "saturated_claims_per_s": r(claims_rate, 1), "saturated_saves_per_s": r(saves_rate, 1),
                   "saturated_submits_per_s": r(submits_rate, 1),
                   "saturated_claim_p95_ms": r(pct(sat_rec.ms["claim"], 95)),
                   "saturated_save_p95_ms": r(pct(sat_rec.ms["save"], 95)),
                   "saturated_select1_p95_ms": r(pct(sel_rec.ms["select1"], 95), 3),
                   "saturated_client_cpu_cores": r(client_cpu)}
            think_rec.errors += sel_rec.errors

        claims = think_rec.claims + sat_rec.claims
        errors = think_rec.errors + sat_rec.errors
        project.refresh_from_db()
        dbl_memory = double_assigned_memory(claims, args.overlap)
        dbl_db = double_assigned_db(project.pk, args.overlap)
        connection.close()
        print(f"claims: {len(claims)} ({len({c for c, _ in claims})} clips); beyond the overlap: "
              f"{dbl_memory} by the claims recorded, {dbl_db} in the database; empty queue answers: "
              f"{think_rec.empty + sat_rec.empty}; errors: {len(errors)}")
        for e in errors[:3]:
            print(e, file=sys.stderr)

        claim_p95, save_p95 = pct(think_rec.ms["claim"], 95), pct(think_rec.ms["save"], 95)
        ratio = (lambda x: r(x / base, 1)) if base else (lambda x: None)
        total_s = time.perf_counter() - started
        print(f"fill {fill_s:.1f} s{' (reused)' if reused else ''}, whole run {total_s:.1f} s")
        result = {
            "clips": n_clips, "annotators": args.annotators,
            "claim_p95_ms": r(claim_p95), "save_p95_ms": r(save_p95), "select1_p95_ms": r(base, 3),
            "double_assigned": max(dbl_memory, dbl_db),
            "claim_p50_ms": r(pct(think_rec.ms["claim"], 50)), "save_p50_ms": r(pct(think_rec.ms["save"], 50)),
            "select1_p50_ms": r(pct(think_rec.ms["select1"], 50), 3),
            "claim_p95_vs_select1": ratio(claim_p95) if claim_p95 else None,
            "save_p95_vs_select1": ratio(save_p95) if save_p95 else None,
            "claims": len(think_rec.ms["claim"]), "saves": len(think_rec.ms["save"]),
            "submit_p95_ms": r(pct(think_rec.ms["submit"], 95)),
            "start_p95_ms": r(pct(think_rec.ms["start"], 95)),
            **sat,
            "double_assigned_memory": dbl_memory, "double_assigned_db": dbl_db,
            "overlap": args.overlap, "done_at_head": args.done, "think_s": list(think), "seconds": args.seconds,
            "errors": len(errors),
            "fill_s": r(fill_s, 1), "fill_reused": reused, "total_s": r(total_s, 1),
        }
        print(json.dumps(result))
        if errors:
            sys.exit(1)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
