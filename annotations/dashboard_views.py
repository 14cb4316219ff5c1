"""The managers' project dashboard: label progress, throughput, agreement, label distribution, model quality,
gold accuracy and vocabulary drift, as server-drawn plots, each with its numbers as a table.

Thin: membership through selectors.project_for(..., Role.MANAGER) (404 for anyone else); the figures come
from services.dashboard, stored by a beat task, so the page reads one row whatever the project's size.
Here they only become plots (plots.figure / plots.bar_figure).
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from . import dispatch, plots, selectors
from .models import Role
from .services import dashboard

TOP_TERMS = 25


def _day(text: str) -> datetime:
    """A stored day or week (ISO date) as midnight UTC: the plots' time axis takes datetimes."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def progress_figure(data: dict) -> plots.Figure:
    series = [plots.Series(name, [(_day(day), n) for day, n in points])
              for name, points in data.get("series", {}).items()]
    return plots.figure(series, title="Clips by label state over time (cumulative)", x_label="day",
                        y_label="clips", chart_id="progress", y_min=0)


def throughput_figures(data: dict) -> list[plots.BarFigure]:
    rows = data.get("annotators", [])
    days = data.get("days", dashboard.THROUGHPUT_DAYS)
    rate = [plots.Bar(r["username"], r["clips_per_hour"],
                      note=f"{r['submitted']} submitted in {r['active_hours']:.1f} active hours")
            for r in rows]
    lead = [plots.Bar(r["username"], r["median_lead_s"], note=f"{r['submitted']} submitted") for r in rows]
    return [plots.bar_figure(rate, title=f"Clips per active hour, last {days} days", value_label="clips per hour",
                             chart_id="throughput-rate"),
            plots.bar_figure(lead, title=f"Median lead time per clip, last {days} days", value_label="seconds",
                             chart_id="throughput-lead")]


def drift_figures(data: dict) -> dict:
    series = [plots.Series(f"{source} terms", [(_day(week), n) for week, n in points])
              for source, points in data.get("new_per_week", {}).items()]
    new = plots.figure(series, title="New vocabulary entries per week", x_label="week", y_label="entries",
                       chart_id="drift-new", y_min=0)
    window = data.get("window_days", dashboard.MOVER_WINDOW_DAYS)
    movers = [plots.Bar(m["term"], m["change"], note=f"{m['before']:.1f}% before, {m['after']:.1f}% now")
              for m in data.get("movers", [])]
    changed = plots.bar_figure(movers, title=f"Terms whose use changed most (last {window} days against the "
                                             f"{window} before)", value_label="change in share of labels "
                                                                             "(percentage points)",
                               chart_id="drift-movers")
    return {"new": new, "movers": changed}


def agreement_figures(data: dict) -> dict:
    def bar(label, row, note=""):
        return plots.Bar(label, row.get("jaccard"), note=note or f"{row['n']} clips, alpha {_num(row.get('alpha'))}")

    annotators = [bar(r["annotator"], r) for r in data.get("annotators", [])]
    families = [plots.Bar(r["family"], r.get("alpha"),
                          note=f"used on {r['used']} of {r['n']} clips, Jaccard {_num(r.get('jaccard'))}")
                for r in data.get("families", [])]
    return {"alpha": data.get("alpha"), "jaccard": data.get("jaccard"), "n": data.get("n", 0),
            "annotators": plots.bar_figure(annotators, title="Each annotator against the others (mean Jaccard)",
                                           value_label="mean Jaccard over canonical terms", value_max=1,
                                           chart_id="agreement-annotators"),
            "families": plots.bar_figure(families, title="Agreement per emotion family (Krippendorff's alpha)",
                                         value_label="alpha, family used or not", value_max=1,
                                         chart_id="agreement-families")}


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def label_figures(data: dict) -> dict:
    clips = data.get("clips", 0)
    families = [plots.Bar(name, n, note=f"{n / clips:.0%} of verified clips" if clips else "")
                for name, n in data.get("families", {}).items()]
    terms = [plots.Bar(name, n) for name, n in list(data.get("terms", {}).items())[:TOP_TERMS]]
    return {"clips": clips,
            "families": plots.bar_figure(families, title="Verified labels by emotion family",
                                         value_label="labels", chart_id="labels-families"),
            "terms": plots.bar_figure(terms, title=f"The {TOP_TERMS} most used canonical terms",
                                      value_label="verified clips", chart_id="labels-terms")}


def _backend_order(backend: str) -> tuple[int, str]:
    """The backends in a fixed order (so each keeps its colour in every plot), fused last."""
    order = ("internvl", "affectgpt", "import", "fused")
    return (order.index(backend) if backend in order else len(order) - 1, backend)


def model_figures(models: list[dict], wheel: bool) -> dict:
    metric = "emotion-wheel F (level 1, mean over wheels)" if wheel else "F over the project vocabulary"
    models = sorted(models, key=lambda m: (_backend_order(m["backend"]), m.get("at") or ""))
    bars = []
    for m in models:
        ci = (m.get("ci") or {}).get("f") or [None, None]
        bars.append(plots.Bar(f"{m['backend']} · {m['model_version']}", m.get("f"), ci[0], ci[1], group=m["backend"],
                              note=f"n = {m['clips']}, precision {_num(m.get('precision'))}, "
                                   f"recall {_num(m.get('recall'))}"))
    by_backend: dict[str, list] = {}
    for m in models:
        if m.get("at") and m.get("f") is not None:
            by_backend.setdefault(m["backend"], []).append(
                (datetime.fromisoformat(m["at"]), m["f"], m["model_version"]))
    over_time = [plots.Series(backend, sorted(points))
                 for backend, points in sorted(by_backend.items(), key=lambda kv: _backend_order(kv[0]))]
    return {"metric": metric, "wheel": wheel,
            "bars": plots.bar_figure(bars, title=f"Model quality on test-split clips: {metric}",
                                     value_label="F, with its 95% bootstrap interval", value_max=1,
                                     chart_id="models-f"),
            "over_time": plots.figure(over_time, title="F per model version over time", x_label="model version "
                                      "registered", y_label="F", chart_id="models-time", y_min=0, y_max=1),
            "rows": models}


def gold_figures(data: dict) -> dict:
    series = [plots.Series(a["username"], [(_day(w["week"]), w["score"]) for w in a.get("weeks", [])])
              for a in data.get("annotators", [])]
    return {"floor": data.get("floor"), "min_answers": data.get("min_answers"),
            "gold_clips": data.get("gold_clips", 0), "annotators": data.get("annotators", []),
            "over_time": plots.figure(series, title="Gold accuracy per annotator, by week", x_label="week",
                                      y_label="gold score (family partial credit)", chart_id="gold-time",
                                      y_min=0, y_max=1)}


@login_required
@never_cache
@require_GET
def project_dashboard(request, slug):
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    data, computed_at = dashboard.figures_for(project)
    context = {"project": project, "computed_at": computed_at, "pending": data is None,
               "states": data["states"] if data is not None else dashboard.state_counts(project)}
    if data is not None:
        context.update(sections(data))
    return render(request, "annotations/dashboard.html", context)


@login_required
@require_POST
def dashboard_refresh(request, slug):
    project = selectors.project_for(request.user, slug, Role.MANAGER)
    dispatch.refresh_dashboard(project.pk)
    messages.success(request, "The figures are being recomputed; reload the page in a minute.")
    return redirect("annotations:dashboard", slug=project.slug)


def sections(data: dict) -> dict:
    return {"progress": progress_figure(data.get("progress", {})),
            "throughput": throughput_figures(data.get("throughput", {})),
            "agreement": agreement_figures(data.get("agreement", {})),
            "labels": label_figures(data.get("labels", {})),
            "models": model_figures(data.get("models", []), bool(data.get("wheel"))),
            "gold": gold_figures(data.get("gold", {})),
            "drift": drift_figures(data.get("drift", {})),
            "seconds": data.get("seconds")}
