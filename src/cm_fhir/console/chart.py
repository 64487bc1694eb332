"""The overview's message-flow chart as SVG, drawn on the server. Pure.

:func:`flow_chart` draws one line per series (received, processed, failed, dead-lettered) over
hourly buckets, with axes, hour labels, a legend, a ``<title>`` and an ``aria-label`` that says
the totals, so the chart reads without the picture. Colours are SVG attributes, not inline
styles, so the console's Content Security Policy holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape

__all__ = ["SERIES", "flow_chart"]

#: Series name -> stroke colour (distinct for colour-blind readers: blue, green, orange, purple).
SERIES: dict[str, str] = {
    "received": "#0a58ca",
    "processed": "#1a7f37",
    "failed": "#d55e00",
    "dead-lettered": "#8250df",
}
_W, _H = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 14, 48


def _ticks(peak: int) -> list[int]:
    if peak <= 4:
        return list(range(peak + 1))
    step = max(1, round(peak / 4))
    return list(range(0, peak + 1, step))


def flow_chart(title: str, hours: Sequence[datetime], counts: Mapping[str, Sequence[int]]) -> str:
    """An SVG line chart of ``counts`` (series -> one count per hour of ``hours``)."""
    peak = max([1, *(max(values, default=0) for values in counts.values())])
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    span = max(1, len(hours) - 1)

    def x(i: int) -> float:
        return _LEFT + plot_w * i / span

    def y(value: int) -> float:
        return _TOP + plot_h * (1 - value / peak)

    totals = ", ".join(f"{name} {sum(counts.get(name, ()))}" for name in SERIES)
    label = escape(f"{title}: messages per hour over the last {len(hours)} hours; totals {totals}")
    out = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{label}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{label}</title>",
    ]
    for tick in _ticks(peak):
        ty = y(tick)
        out.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#d0d7de"/>'
        )
        out.append(
            f'<text x="{_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#57606a">{tick}</text>'
        )
    for i, hour in enumerate(hours):
        if i % 3 == 0 or i == len(hours) - 1:
            out.append(
                f'<text x="{x(i):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle" '
                f'font-size="11" fill="#57606a">{hour:%H}h</text>'
            )
    for name, colour in SERIES.items():
        values = counts.get(name, [0] * len(hours))
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{escape(name)}</title></polyline>"
        )
    for n, (name, colour) in enumerate(SERIES.items()):
        lx = _LEFT + n * 150
        ly = _H - 12
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="14" height="4" fill="{colour}"/>')
        out.append(
            f'<text x="{lx + 20}" y="{ly - 3}" font-size="12" fill="#1b1f24">{escape(name)} '
            f"({sum(counts.get(name, ()))})</text>"
        )
    out.append("</svg>")
    return "".join(out)
