"""Plots as inline SVG, drawn on the server: the one way the app shows a chart.

Why server-side SVG: the pages stay script-free where they can (the CSP allows only our own static
scripts), need no CDN or Node build, print and screenshot as they look, and the numbers are in the page for
a test to read. Every chart is a plain <svg> with a <title> and <desc> (read by screen readers through
aria-labelledby), presentation attributes only (no <style>, no script, no external reference), and every
piece of text in it escaped. Under every chart a page shows the same numbers as a table
(`_training_plot.html`: a <details> block), so nothing is only in the picture.

`line_chart(series, ...)` returns the SVG as a safe string; `figure(series, ...)` wraps it with the table
rows a template needs. A series is a name and its (x, y) points; x may be numbers or datetimes (then the
x ticks are dates). Points whose y is None are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Colour-blind-safe series colours (Okabe-Ito), in order.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
WIDTH, HEIGHT = 720, 280  # drawn at most 1:1 (app.css), so the 11-14 px text stays that size
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 48, 34, 58
FONT = 'font-family="system-ui, sans-serif"'


@dataclass
class Series:
    name: str
    points: list[tuple] = field(default_factory=list)  # [(x, y)] or [(x, y, label)]; x a number or a datetime


@dataclass
class Figure:
    """A chart and its table fallback: `svg` (safe), the labels, and one row per point."""

    svg: SafeString
    title: str
    x_label: str
    y_label: str
    rows: list[tuple[str, str, str, str]]  # (series, point label, x as shown, y as shown)
    empty: bool


def _points(series: Series) -> list[tuple]:
    """(x, y, label) of the points that can be drawn: x present, y a finite number."""
    out = []
    for point in series.points:
        x, y, label = (tuple(point) + ("",))[:3]
        if x is not None and isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y):
            out.append((x, y, str(label or "")))
    return out


def _as_number(x) -> float:
    if isinstance(x, datetime):
        return (x if x.tzinfo else x.replace(tzinfo=UTC)).timestamp()
    return float(x)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 × a power of ten) covering lo..hi, about `count` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.2e}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _format_x(value, dates: bool, step: float) -> str:
    """A tick or point label; dates (UTC) with the hour when the ticks are less than a day apart."""
    if not dates:
        return format_number(value)
    moment = datetime.fromtimestamp(value, tz=UTC)
    return moment.strftime("%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M")


def _date_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi == lo:
        return [lo]
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


def _open_svg(cid: str, width: int, height: int, title: str, desc: str, *, title_x: float) -> list[str]:
    """The opening of every chart: the <svg> labelled by its <title> and <desc>, a white ground, the title."""
    return [(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'width="100%" preserveAspectRatio="xMidYMid meet" role="img" '
             f'aria-labelledby="{cid}-title {cid}-desc">'),
            f'<title id="{cid}-title">{escape(title)}</title>',
            f'<desc id="{cid}-desc">{escape(desc)}</desc>',
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{title_x}" y="20" {FONT} font-size="14" font-weight="600" fill="#1d2330">{escape(title)}</text>']


def _legend_entry(out: list[str], x: float, y_bottom: float, colour: str, name: str) -> float:
    """A legend square and its (escaped) name at x; returns where the next entry starts."""
    out.append(f'<rect x="{x}" y="{y_bottom - 12}" width="10" height="10" fill="{colour}"/>')
    out.append(f'<text x="{x + 14}" y="{y_bottom - 3}" {FONT} font-size="11" fill="#1d2330">{escape(name)}</text>')
    return x + 24 + 7 * min(len(name), 40)


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str, chart_id: str = "chart",
               width: int = WIDTH, height: int = HEIGHT, y_min: float | None = None,
               y_max: float | None = None) -> SafeString:
    """An SVG line chart of `series` with axes, ticks, axis labels, a legend, a <title> and a <desc>.
    `y_min`/`y_max` widen (never narrow) the y range, e.g. 0..1 for scores. `chart_id` must be unique
    within the page (it names the title and desc elements)."""
    cid = escape(chart_id)
    drawn = [(s, _points(s)) for s in series]
    drawn = [(s, pts) for s, pts in drawn if pts]
    all_points = [p for _, pts in drawn for p in pts]
    dates = any(isinstance(x, datetime) for x, _, _ in all_points)
    left, top = MARGIN_LEFT, MARGIN_TOP
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM
    if all_points:
        n = len(all_points)
        desc = (f"{y_label} against {x_label}: {n} point{'s' if n != 1 else ''} in "
                f"{len(drawn)} series ({', '.join(s.name for s, _ in drawn)}). The table below lists them.")
    else:
        desc = f"{y_label} against {x_label}: no data yet."
    out = _open_svg(cid, width, height, title, desc, title_x=left)
    if not all_points:
        out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#e4e7ec"/>')
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" {FONT} font-size="13" '
                   f'fill="#667085" text-anchor="middle">No data yet</text>')
        out.append("</svg>")
        return mark_safe("".join(out))  # every text above went through escape()

    xs = [_as_number(x) for x, _, _ in all_points]
    ys = [float(y) for _, y, _ in all_points]
    y_lo = min(ys + ([y_min] if y_min is not None else []))
    y_hi = max(ys + ([y_max] if y_max is not None else []))
    y_ticks = nice_ticks(y_lo, y_hi)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    x_lo, x_hi = min(xs), max(xs)
    if dates:
        x_ticks = _date_ticks(x_lo, x_hi)
        if x_hi == x_lo:
            x_lo, x_hi = x_lo - 43200, x_hi + 43200  # one point: half a day either side
    else:
        x_ticks = nice_ticks(x_lo, x_hi)
        x_lo, x_hi = x_ticks[0], x_ticks[-1]
    step = (x_ticks[1] - x_ticks[0]) if len(x_ticks) > 1 else 0.0

    def sx(value: float) -> float:
        return left + (value - x_lo) / (x_hi - x_lo) * plot_w

    def sy(value: float) -> float:
        return top + plot_h - (value - y_lo) / (y_hi - y_lo) * plot_h

    # Grid and y ticks.
    for tick in y_ticks:
        y = sy(tick)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eef0f3"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" {FONT} font-size="11" fill="#667085" '
                   f'text-anchor="end">{escape(format_number(tick))}</text>')
    for tick in x_ticks:
        x = sx(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#667085"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 17}" {FONT} font-size="11" fill="#667085" '
                   f'text-anchor="middle">{escape(_format_x(tick, dates, step))}</text>')
    # Axes and their labels.
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#667085"/>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#667085"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 24}" {FONT} font-size="12" fill="#1d2330" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" {FONT} font-size="12" fill="#1d2330" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{escape(y_label)}</text>')
    # The series: a line, a dot per point (its own <title> says the values on hover), a legend entry.
    legend_x = left
    for index, (s, pts) in enumerate(drawn):
        colour = COLOURS[index % len(COLOURS)]
        coords = [(sx(_as_number(x)), sy(float(y))) for x, y, _ in pts]
        name = escape(s.name)
        out.append(f'<g class="series" data-series="{name}">')
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), (raw_x, raw_y, point_label) in zip(coords, pts, strict=True):
            shown_x = _format_x(_as_number(raw_x), dates, 0) if dates else format_number(raw_x)
            label = f"{s.name}{' ' + point_label if point_label else ''}: {shown_x}, {format_number(float(raw_y))}"
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}" '
                       f'data-x="{escape(_as_number(raw_x))}" data-y="{escape(float(raw_y))}">'
                       f'<title>{escape(label)}</title></circle>')
        out.append("</g>")
        legend_x = _legend_entry(out, legend_x, height, colour, s.name)
    out.append("</svg>")
    return mark_safe("".join(out))  # every text above went through escape()


def figure(series: Iterable[Series], *, title: str, x_label: str, y_label: str, chart_id: str = "chart",
           **options) -> Figure:
    """`line_chart` plus the table fallback's rows (the same numbers, as shown)."""
    series = list(series)
    rows = []
    for s in series:
        for x, y, label in _points(s):
            shown_x = (x.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(x, datetime)
                       else format_number(float(x)))
            rows.append((s.name, label, shown_x, format_number(float(y))))
    svg = line_chart(series, title=title, x_label=x_label, y_label=y_label, chart_id=chart_id, **options)
    return Figure(svg=svg, title=title, x_label=x_label, y_label=y_label, rows=rows, empty=not rows)


# --- bar charts ----------------------------------------------------------------------------------------

@dataclass
class Bar:
    label: str
    value: float | None
    low: float | None = None  # an interval drawn as a whisker (e.g. a 95% bootstrap interval)
    high: float | None = None
    group: str = ""  # bars of one group share a colour and a legend entry
    note: str = ""  # shown in the table (e.g. "n = 40")


@dataclass
class BarFigure:
    svg: SafeString
    title: str
    value_label: str
    bars: list[Bar]
    has_interval: bool
    has_notes: bool
    empty: bool

    def shown(self, value: float | None) -> str:
        return "-" if value is None else format_number(float(value))


def _drawable(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def bar_chart(bars: Sequence[Bar], *, title: str, value_label: str, chart_id: str = "bars",
              width: int = WIDTH, value_max: float | None = None, max_bars: int = 30) -> SafeString:
    """Horizontal bars, one row per `Bar`, with whiskers for intervals and a legend of groups. The scale
    always holds 0 (bars grow from it, left for negative values) and reaches at least `value_max`."""
    cid = escape(chart_id)
    shown = [b for b in bars if _drawable(b.value)][:max_bars]
    label_w = min(220, 12 + 7 * max((len(b.label) for b in shown), default=4))
    left, top, right = label_w, MARGIN_TOP + 4, 56
    row_h = 22
    groups = list(dict.fromkeys(b.group for b in shown if b.group))
    legend_h = 22 if groups else 0
    height = top + max(1, len(shown)) * row_h + 34 + legend_h
    plot_w = width - left - right
    if shown:
        desc = (f"{value_label} for {len(shown)} item{'s' if len(shown) != 1 else ''}"
                f"{' (the first ' + str(max_bars) + ')' if len(bars) > max_bars else ''}. The table below lists them.")
    else:
        desc = f"{value_label}: no data yet."
    out = _open_svg(cid, width, height, title, desc, title_x=12)
    if not shown:
        out.append(f'<text x="{width / 2:.1f}" y="{top + 14}" {FONT} font-size="13" fill="#667085" '
                   f'text-anchor="middle">No data yet</text></svg>')
        return mark_safe("".join(out))  # every text above went through escape()
    ends = ([float(b.value) for b in shown] + [float(b.high) for b in shown if _drawable(b.high)]
            + [float(b.low) for b in shown if _drawable(b.low)] + ([value_max] if value_max is not None else []))
    lo_end, hi_end = min([0.0, *ends]), max([0.0, *ends])
    ticks = nice_ticks(lo_end, hi_end if hi_end > lo_end else lo_end + 1.0, count=4)
    lo, hi = ticks[0], ticks[-1]

    def sx(value: float) -> float:
        return left + (float(value) - lo) / (hi - lo) * plot_w

    bottom = top + len(shown) * row_h
    for tick in ticks:
        x = sx(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="#eef0f3"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 15}" {FONT} font-size="11" fill="#667085" '
                   f'text-anchor="middle">{escape(format_number(tick))}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{bottom + 31}" {FONT} font-size="12" fill="#1d2330" '
               f'text-anchor="middle">{escape(value_label)}</text>')
    for index, b in enumerate(shown):
        y = top + index * row_h
        colour = COLOURS[groups.index(b.group) % len(COLOURS)] if b.group else COLOURS[0]
        value = float(b.value)
        tip = f"{b.label}: {format_number(value)}"
        if _drawable(b.low) and _drawable(b.high):
            tip += f" (95% interval {format_number(float(b.low))} to {format_number(float(b.high))})"
        if b.note:
            tip += f", {b.note}"
        out.append(f'<g class="bar" data-label="{escape(b.label)}" data-value="{escape(value)}">')
        out.append(f'<text x="{left - 6}" y="{y + 15}" {FONT} font-size="11" fill="#1d2330" '
                   f'text-anchor="end">{escape(b.label[:32])}</text>')
        x0, x1 = sorted((sx(0.0), sx(value)))
        out.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(1.0, x1 - x0):.1f}" height="{row_h - 8}" '
                   f'fill="{colour}"><title>{escape(tip)}</title></rect>')
        if _drawable(b.low) and _drawable(b.high):
            x1, x2, mid = sx(float(b.low)), sx(float(b.high)), y + row_h / 2
            out.append(f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}" stroke="#1d2330"/>')
            for x in (x1, x2):
                out.append(f'<line x1="{x:.1f}" y1="{mid - 5:.1f}" x2="{x:.1f}" y2="{mid + 5:.1f}" stroke="#1d2330"/>')
        end = max(x1, sx(float(b.high)) if _drawable(b.high) else x1)
        out.append(f'<text x="{end + 4:.1f}" y="{y + 15}" {FONT} font-size="11" '
                   f'fill="#667085">{escape(format_number(value))}</text>')
        out.append("</g>")
    legend_x = 12
    for index, group in enumerate(groups):
        legend_x = _legend_entry(out, legend_x, height - 2, COLOURS[index % len(COLOURS)], group)
    out.append("</svg>")
    return mark_safe("".join(out))  # every text above went through escape()


def bar_figure(bars: Iterable[Bar], *, title: str, value_label: str, chart_id: str = "bars",
               **options) -> BarFigure:
    """`bar_chart` plus its table fallback (every bar, also those beyond the drawn `max_bars`)."""
    bars = list(bars)
    svg = bar_chart(bars, title=title, value_label=value_label, chart_id=chart_id, **options)
    return BarFigure(svg=svg, title=title, value_label=value_label, bars=bars,
                     has_interval=any(_drawable(b.low) for b in bars), has_notes=any(b.note for b in bars),
                     empty=not any(_drawable(b.value) for b in bars))
