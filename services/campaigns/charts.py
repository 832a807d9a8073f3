"""Charts drawn on the server as inline SVG: no script, no external library or CDN, so the dashboard works offline.

Each chart is an `<svg role="img">` with a title and a description (read by screen readers); the page shows the
same figures in a table beside it. Colours come from one palette with enough contrast on white.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#1d4ed8", "#b91c1c", "#047857", "#7c3aed", "#b45309", "#0e7490", "#be185d", "#4d7c0f", "#374151")
_ids = itertools.count(1)
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _nice_max(value: float) -> float:
    """A round number at or above `value` (at least 5), for the top of an axis of counts."""
    if value <= 5:
        return 5
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _open(kind: str, title: str, desc: str, width: int, height: int) -> tuple[str, str]:
    n = next(_ids)
    tid, did = f"chart-{kind}-{n}-title", f"chart-{kind}-{n}-desc"
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart--{kind}" role="img" '
            f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
            f'aria-labelledby="{tid} {did}" data-chart="{kind}">'
            f'<title id="{tid}">{escape(title)}</title><desc id="{did}">{escape(desc)}</desc>')
    return head, "</svg>"


def _y_axis(top: float, left: int, right: int, y0: int, height: int) -> str:
    """Grid lines with whole-number labels: 4 steps for a top of 2, 20, 200…, otherwise 5."""
    lead = top / 10 ** (len(str(int(top))) - 1)
    ticks = 4 if lead == 2 else 5
    parts = []
    for i in range(ticks + 1):
        value = top * i / ticks
        y = y0 - height * i / ticks
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d1d5db" stroke-width="1"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#374151" {FONT}>'
                     f'{_fmt(value)}</text>')
    return "".join(parts)


def line_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *,
               width: int = 720, height: int = 300) -> Markup:
    """Lines over time (one per series), with a legend under the chart in the page's own text: full names that wrap
    on a phone, where text inside the scaled-down drawing would be cut or too small to read."""
    desc = "; ".join(f"{name}: {_fmt(values[0]) if values else 0} to {_fmt(values[-1]) if values else 0}"
                     for name, values in series) or "No data yet"
    head, tail = _open("line", title, desc, width, height)
    left, right, top_pad, bottom = 48, width - 24, 16, height - 40
    plot_h = bottom - top_pad
    top = _nice_max(max([v for _, vs in series for v in vs] or [0]))
    parts = [head, _y_axis(top, left, right, bottom, plot_h)]
    n = max(len(labels), 1)
    step = (right - left) / max(n - 1, 1)
    for i, label in enumerate(labels):
        if n <= 8 or i % max(1, n // 6) == 0 or i == n - 1:
            parts.append(f'<text x="{left + i * step:.1f}" y="{bottom + 18}" text-anchor="middle" fill="#374151" '
                         f'{FONT}>{escape(label)}</text>')
    for k, (name, values) in enumerate(series[: len(PALETTE)]):
        colour = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{left + i * step:.1f},{bottom - plot_h * v / top:.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2.5" points="{points}">'
                     f'<title>{escape(name)}</title></polyline>')
        for i, v in enumerate(values):
            parts.append(f'<circle cx="{left + i * step:.1f}" cy="{bottom - plot_h * v / top:.1f}" r="3" '
                         f'fill="{colour}"><title>{escape(name)}, {escape(labels[i])}: {_fmt(v)}</title></circle>')
    parts.append(tail)
    legend = "".join(f'<li><span class="swatch" style="background:{PALETTE[k % len(PALETTE)]}"></span>'
                     f'{escape(name)}</li>' for k, (name, _) in enumerate(series[: len(PALETTE)]))
    if legend:
        parts.append(f'<ul class="chart-legend">{legend}</ul>')
    return Markup("".join(parts))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *, width: int = 720, height: int = 260,
              percent: bool = False) -> Markup:
    """Vertical bars, one per label, each with its value written above it."""
    desc = "; ".join(f"{label}: {_fmt(v * 100 if percent else v)}{'%' if percent else ''}"
                     for label, v in zip(labels, values, strict=False)) or "No data yet"
    head, tail = _open("bar", title, desc, width, height)
    left, right, top_pad, bottom = 48, width - 12, 20, height - 40
    plot_h = bottom - top_pad
    top = 1.0 if percent else _nice_max(max(values or [0]))
    parts = [head]
    axis = _y_axis(top * (100 if percent else 1), left, right, bottom, plot_h)
    parts.append(axis)
    n = max(len(values), 1)
    slot = (right - left) / n
    bar_w = max(4.0, slot * 0.7)
    for i, (label, v) in enumerate(zip(labels, values, strict=False)):
        h = plot_h * (v / top if top else 0)
        x = left + i * slot + (slot - bar_w) / 2
        shown = f"{_fmt(v * 100)}%" if percent else _fmt(v)
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{bottom - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                     f'fill="{PALETTE[0]}"><title>{escape(label)}: {shown}</title></rect>'
                     f'<text x="{x + bar_w / 2:.1f}" y="{bottom - h - 4:.1f}" text-anchor="middle" fill="#111827" '
                     f'{FONT}>{shown}</text>')
        if n <= 12 or i % max(1, n // 8) == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{bottom + 18}" text-anchor="middle" fill="#374151" '
                         f'{FONT}>{escape(label[:14])}</text>')
    parts.append(tail)
    return Markup("".join(parts))


def horizontal_bars(title: str, rows: Sequence[tuple[str, float]], *, width: int = 720, kind: str = "hbar") -> Markup:
    """Horizontal bars with their labels on the left: rankings and the engagement funnel."""
    rows = list(rows)
    row_h = 30
    height = max(60, 20 + row_h * len(rows))
    desc = "; ".join(f"{label}: {_fmt(v)}" for label, v in rows) or "No data yet"
    head, tail = _open(kind, title, desc, width, height)
    label_w, right = 220, width - 60
    top = _nice_max(max([v for _, v in rows] or [0]))
    parts = [head]
    for i, (label, v) in enumerate(rows):
        y = 10 + i * row_h
        w = (right - label_w) * (v / top if top else 0)
        colour = PALETTE[i % len(PALETTE)] if kind == "funnel" else PALETTE[0]
        x = label_w + ((right - label_w) - w) / 2 if kind == "funnel" else label_w
        parts.append(f'<text x="{label_w - 8}" y="{y + 18}" text-anchor="end" fill="#111827" {FONT}>'
                     f'{escape(label[:32])}</text>'
                     f'<rect class="bar" x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{row_h - 8}" '
                     f'fill="{colour}"><title>{escape(label)}: {_fmt(v)}</title></rect>'
                     f'<text x="{(x + w if kind != "funnel" else right) + 6:.1f}" y="{y + 18}" fill="#111827" '
                     f'{FONT}>{_fmt(v)}</text>')
    parts.append(tail)
    return Markup("".join(parts))
