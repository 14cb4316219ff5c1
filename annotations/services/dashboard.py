"""The project dashboard's figures: what they are, how they are computed, and where they are kept.

Every figure (label-state counts, progress over time, throughput, agreement, label distribution, model
quality with bootstrap intervals, gold accuracy, vocabulary drift) reads every clip, annotation or
prediction of a project, so the beat task
`affectloop.reports.dashboard` computes them every 15 minutes into one `DashboardFigures` row per project
(`refresh`), and the page only reads that row. A small project with no row yet is computed on the spot;
a big one shows "being computed" and queues the task. Everything stored is plain JSON (dates as ISO
strings), so it can be served by the API or compared between runs as it is.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Count, Min
from django.db.models.functions import TruncDate
from django.utils import timezone

from ml.metrics import load_wheel

from ..models import Annotation, Clip, DashboardFigures, EmotionTerm, Prediction, Project
from . import evaluation, gold, quality
from .vocabulary import project_vocabulary

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored shape changes: older rows are recomputed rather than misread
INLINE_LIMIT = 20_000  # clips: below this a missing row is computed while the page waits
CHUNK = 5_000
THROUGHPUT_DAYS = 30
DRIFT_WEEKS = 12
MOVER_WINDOW_DAYS = 28
MOVERS = 8


# --- label states -----------------------------------------------------------------------------------------

def state_counts(project: Project) -> dict[str, int]:
    """Clips per label state (the index on project, status, label_state answers it). Stored with the other
    figures: at a million clips the count alone costs the page about 100 ms."""
    counts = dict(Clip.objects.filter(project=project).values_list("label_state")
                  .annotate(n=Count("id")).values_list("label_state", "n"))
    return {state: counts.get(state, 0) for state in Clip.LabelState.values}


# --- progress -------------------------------------------------------------------------------------------

def _daily(dates) -> Counter:
    """day -> count, from datetimes (or dates)."""
    out: Counter = Counter()
    for moment in dates:
        if moment is None:
            continue
        day = timezone.localdate(moment) if isinstance(moment, datetime) else moment
        out[day] += 1
    return out


def _cumulative(per_day: Counter, days: list[date]) -> list[list]:
    total, points = 0, []
    for day in days:
        total += per_day.get(day, 0)
        points.append([day.isoformat(), total])
    return points


def progress(project: Project) -> dict:
    """Clips that reached each stage, cumulative per day: ready (ingested and processed), pre-labelled
    (its first fused prediction), submitted (its first submitted annotation), verified (its current
    verification time, so a clip verified again counts on its last day)."""
    clips = Clip.objects.filter(project=project)
    ready = Counter(dict(clips.filter(ready_at__isnull=False).annotate(day=TruncDate("ready_at"))
                         .values("day").annotate(n=Count("id")).values_list("day", "n")))
    verified = Counter(dict(clips.filter(verified_at__isnull=False).annotate(day=TruncDate("verified_at"))
                            .values("day").annotate(n=Count("id")).values_list("day", "n")))
    prelabelled = _daily(Prediction.objects.filter(clip__project=project, backend="fused").values("clip")
                         .annotate(first=Min("created_at")).values_list("first", flat=True)
                         .iterator(chunk_size=CHUNK))
    submitted = _daily(Annotation.objects.filter(clip__project=project, status=Annotation.Status.SUBMITTED)
                       .values("clip").annotate(first=Min("submitted_at")).values_list("first", flat=True)
                       .iterator(chunk_size=CHUNK))
    stages = {"ready": ready, "pre-labelled": prelabelled, "submitted": submitted, "verified": verified}
    known = [day for counter in stages.values() for day in counter if day is not None]
    if not known:
        return {"series": {name: [] for name in stages}}
    first, last = min(known), max(max(known), timezone.localdate())
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return {"series": {name: _cumulative(counter, days) for name, counter in stages.items()}}


# --- throughput -----------------------------------------------------------------------------------------

def throughput(project: Project, *, days: int = THROUGHPUT_DAYS, now: datetime | None = None) -> dict:
    """Per annotator over the last `days`: annotations submitted, hours of active work (the lead time the
    annotate page measures: time with the page in front, not idle), clips per active hour, and the median
    lead time of one clip."""
    since = (now or timezone.now()) - timedelta(days=days)
    leads: dict[int, list[float]] = defaultdict(list)
    names: dict[int, str] = {}
    rows = (Annotation.objects.filter(clip__project=project, status=Annotation.Status.SUBMITTED,
                                      submitted_at__gte=since)
            .values_list("annotator_id", "annotator__username", "lead_time").iterator(chunk_size=CHUNK))
    for user_id, username, lead in rows:
        leads[user_id].append(float(lead))
        names[user_id] = username
    out = []
    for user_id, values in leads.items():
        hours = sum(values) / 3600
        out.append({"user_id": user_id, "username": names[user_id], "submitted": len(values),
                    "active_hours": round(hours, 4),
                    "clips_per_hour": round(len(values) / hours, 3) if hours > 0 else None,
                    "median_lead_s": round(statistics.median(values), 2)})
    out.sort(key=lambda row: (-row["submitted"], row["username"]))
    return {"days": days, "annotators": out}


# --- vocabulary drift -----------------------------------------------------------------------------------

def _week(day: date) -> date:
    return day - timedelta(days=day.weekday())


def drift(project: Project, *, now: datetime | None = None, weeks: int = DRIFT_WEEKS,
          window_days: int = MOVER_WINDOW_DAYS, movers: int = MOVERS) -> dict:
    """New vocabulary entries per week (proposed by annotators, or model words, never the seed list), and
    the canonical terms whose share of submitted labels changed most between the last `window_days` and
    the `window_days` before (percentage points)."""
    now = now or timezone.now()
    start = _week(timezone.localdate(now)) - timedelta(weeks=weeks - 1)
    new: dict[str, Counter] = defaultdict(Counter)
    for created, source in (EmotionTerm.objects.filter(project=project).exclude(source="seed")
                            .filter(created_at__date__gte=start).values_list("created_at", "source")):
        new[source][_week(timezone.localdate(created))] += 1
    weeks_list = [start + timedelta(weeks=i) for i in range(weeks)]
    per_week = {source: [[w.isoformat(), counts.get(w, 0)] for w in weeks_list]
                for source, counts in sorted(new.items())}

    vocabulary = project_vocabulary(project)
    windows = {"before": (now - timedelta(days=2 * window_days), now - timedelta(days=window_days)),
               "after": (now - timedelta(days=window_days), now)}
    shares: dict[str, dict[str, float]] = {}
    totals: dict[str, int] = {}
    for name, (lo, hi) in windows.items():
        counts: Counter = Counter()
        rows = (Annotation.objects.filter(clip__project=project, status=Annotation.Status.SUBMITTED,
                                          submitted_at__gte=lo, submitted_at__lt=hi)
                .values_list("labels", flat=True).iterator(chunk_size=CHUNK))
        for labels in rows:
            for term in {vocabulary.canonical(str(item.get("term", ""))) or str(item.get("term", "")).lower()
                         for item in labels or [] if isinstance(item, dict)}:
                counts[term] += 1
        totals[name] = sum(counts.values())
        shares[name] = {term: n / totals[name] for term, n in counts.items()} if totals[name] else {}
    changes = []
    if totals["before"] and totals["after"]:
        for term in set(shares["before"]) | set(shares["after"]):
            before, after = shares["before"].get(term, 0.0), shares["after"].get(term, 0.0)
            changes.append({"term": term, "before": round(100 * before, 2), "after": round(100 * after, 2),
                            "change": round(100 * (after - before), 2)})
        changes.sort(key=lambda c: (-abs(c["change"]), c["term"]))
    return {"new_per_week": per_week, "window_days": window_days, "labels": totals,
            "movers": changes[:movers]}


# --- all of it, stored ----------------------------------------------------------------------------------

def compute(project: Project, *, wheel_dir: str | None = None) -> dict:
    """Every costly figure of the dashboard, as JSON-ready data."""
    started = time.perf_counter()
    vocabulary = project_vocabulary(project)
    wheel = load_wheel(wheel_dir) if wheel_dir else None
    data = {
        "format": FORMAT,
        "states": state_counts(project),
        "progress": progress(project),
        "throughput": throughput(project),
        "agreement": quality.project_agreement(project, vocabulary),
        "labels": quality.label_distribution(project, "all", vocabulary),
        "models": quality.model_quality(project, split="test", wheel=wheel, vocabulary=vocabulary),
        "wheel": bool(wheel),
        "gold": gold.gold_accuracy(project),
        "drift": drift(project),
    }
    data["seconds"] = round(time.perf_counter() - started, 3)
    # datetimes (model registration times) as ISO strings: the row holds plain JSON
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def refresh(project: Project, *, wheel_dir: str | None = None) -> DashboardFigures:
    data = compute(project, wheel_dir=wheel_dir)
    row, _ = DashboardFigures.objects.update_or_create(
        project=project, defaults={"data": data, "computed_at": timezone.now(), "seconds": data["seconds"]})
    return row


def refresh_one(project_id: int) -> float | None:
    """The task's body: seconds taken, or None when the project is gone or archived."""
    project = Project.objects.filter(pk=project_id, archived=False).first()
    if project is None:
        return None
    return refresh(project, wheel_dir=evaluation.wheel_dir()).seconds


def refresh_all() -> dict:
    """Every project that is not archived; one failing project is logged and does not stop the others."""
    done, failed = 0, []
    for project_id in Project.objects.filter(archived=False).order_by("pk").values_list("pk", flat=True):
        try:
            refresh_one(project_id)
            done += 1
        except Exception:  # noqa: BLE001 - one broken project must not starve the others' dashboards
            log.exception("dashboard figures of project %s failed", project_id)
            failed.append(project_id)
    return {"refreshed": done, "failed": failed}


def stored(project: Project) -> DashboardFigures | None:
    row = DashboardFigures.objects.filter(project=project).first()
    return row if row is not None and row.data.get("format") == FORMAT else None


def figures_for(project: Project) -> tuple[dict | None, datetime | None]:
    """(figures, computed at) for the page: the stored row; or, for a small project without one, a fresh
    computation (stored too); or (None, None) when a big project waits for the beat task."""
    row = stored(project)
    if row is not None:
        return row.data, row.computed_at
    if Clip.objects.filter(project=project).count() <= INLINE_LIMIT:
        row = refresh(project, wheel_dir=evaluation.wheel_dir())
        return row.data, row.computed_at
    return None, None
