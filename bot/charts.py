"""The season report's chart: requests per week by kind (stacked bars) and the time-to-claim trend, as a PNG.

Rendered off-screen with matplotlib's Agg canvas and the object-oriented API (no pyplot, no display, no global
figure list), so it can run in a worker thread (``asyncio.to_thread``) without blocking the bot. matplotlib is
imported on first use: the bot starts as fast as before.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from functools import cache
from typing import Any

from babel.dates import format_skeleton

from bot.i18n import Translator
from models.stats import Report

WIDTH, HEIGHT, DPI = 1200, 900, 100  # pixels: well inside Telegram's photo limits (sum of sides ≤ 10000)
MAX_SERIES = 7  # kinds drawn separately; the rest are summed as "other"
# Fonts tried in order for every glyph: Latin first, then CJK ones that may be installed (Chinese labels).
FONT_CANDIDATES = (
    "DejaVu Sans",
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
)


@cache
def _fonts() -> list[str]:
    """The candidate families that are installed (naming a missing one makes matplotlib log a warning per text)."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return [name for name in FONT_CANDIDATES if name in installed] or ["sans-serif"]


def _series(report: Report) -> list[str]:
    """Kinds in the order drawn: the most frequent first, at most MAX_SERIES (then the rest as one)."""
    totals: dict[str, int] = {}
    for week in report.weeks:
        for kind, n in week.by_kind.items():
            totals[kind] = totals.get(kind, 0) + n
    ordered = sorted(totals, key=lambda k: (-totals[k], k))
    if len(ordered) > MAX_SERIES:
        # "other" (something else) then also holds the kinds not drawn on their own.
        return [*[k for k in ordered if k != "other"][: MAX_SERIES - 1], "other"]
    return ordered


def render(report: Report, t: Translator, *, title: str, kind_labels: Mapping[str, str]) -> bytes:
    """The chart as PNG bytes, exactly WIDTH × HEIGHT pixels."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with rc_context({"font.family": _fonts(), "axes.unicode_minus": False}):
        figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
        FigureCanvasAgg(figure)
        bars, trend = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
        figure.suptitle(title, fontsize=15)
        _draw_bars(bars, report, t, kind_labels)
        _draw_trend(trend, report, t)
        figure.tight_layout(rect=(0, 0, 1, 0.96))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _labels(report: Report, t: Translator) -> list[str]:
    return [format_skeleton("MMMd", week.start, locale=t.language) for week in report.weeks]


def _draw_bars(axes: Any, report: Report, t: Translator, kind_labels: Mapping[str, str]) -> None:
    positions = list(range(len(report.weeks)))
    series = _series(report)
    shown = set(series) - {"other"}
    bottom = [0.0] * len(report.weeks)
    colours = [
        "#4e79a7",
        "#f28e2b",
        "#e15759",
        "#76b7b2",
        "#59a14f",
        "#edc948",
        "#b07aa1",
        "#9c755f",
    ]
    for index, kind in enumerate(series):
        if kind == "other":
            values = [float(sum(n for k, n in w.by_kind.items() if k not in shown)) for w in report.weeks]
        else:
            values = [float(w.by_kind.get(kind, 0)) for w in report.weeks]
        label = kind_labels.get(kind, kind)
        axes.bar(positions, values, bottom=bottom, label=label, color=colours[index % len(colours)], width=0.7)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_title(t.gettext("Requests and reports per week, by kind of help (a request may ask for several)"))
    axes.set_ylabel(t.gettext("Number"))
    axes.set_xticks(positions, _labels(report, t), rotation=45 if len(positions) > 12 else 0, fontsize=9)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.grid(axis="y", alpha=0.3)
    if series:
        axes.legend(loc="upper left", fontsize=9, ncols=2, frameon=False)


def _draw_trend(axes: Any, report: Report, t: Translator) -> None:
    positions = list(range(len(report.weeks)))
    values = [math.nan if w.claim_median is None else w.claim_median for w in report.weeks]
    axes.plot(positions, values, marker="o", color="#e15759", linewidth=2)
    axes.set_title(t.gettext("Time to claim: weekly median (minutes)"))
    axes.set_ylabel(t.gettext("Minutes"))
    axes.set_xticks(positions, _labels(report, t), rotation=45 if len(positions) > 12 else 0, fontsize=9)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
