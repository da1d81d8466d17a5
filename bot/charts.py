"""Pictures for digests and /trend: appeals per day by label, and the most active channels.

Rendered headless (Agg) at a phone-friendly size: large type, a legend, dates on the axis.
Callers run :func:`appeals_chart` on a worker thread (``asyncio.to_thread``): it builds a
``Figure`` directly, without pyplot's global figure list, and one lock keeps two renders
from sharing matplotlib's global state.
"""

from __future__ import annotations

import io
import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta

import matplotlib

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.taxonomy import LABELS

COLOURS = {
    "surrender": "#2a9d8f", "desertion": "#e9c46a", "family": "#f4a261",
    "pow": "#e76f51", "civilians": "#457b9d", "threat": "#9b2226",
}
SIZE_INCHES = (8.0, 9.0)
DPI = 120
_RENDER = threading.Lock()


def chart_series(per_day: Sequence[tuple[str, str, int]], *, since: date | None = None,
                 until: date | None = None) -> tuple[list[str], dict[str, list[int]]]:
    """The days on the axis (every day of the period, empty ones included) and each label's counts."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for day, label, n in per_day:
        counts[label][day] = n
    days = sorted({d for d, _, _ in per_day})
    if since and until:
        span = (until - since).days
        if 0 < span <= 400:
            days = [(since + timedelta(days=i)).isoformat() for i in range(span)]
    series = {lbl: [counts.get(lbl, {}).get(d, 0) for d in days] for lbl in LABELS if lbl in counts}
    return days, series


def appeals_chart(per_day: Sequence[tuple[str, str, int]], by_channel: Sequence[tuple[str, int]], title: str,
                  *, since: date | None = None, until: date | None = None) -> bytes:
    """PNG bytes: stacked bars of appeals per day by label (top), channels (bottom). Thread-safe."""
    with _RENDER, matplotlib.rc_context({"font.size": 15}):
        return _render(per_day, by_channel, title, since=since, until=until)


def _render(per_day: Sequence[tuple[str, str, int]], by_channel: Sequence[tuple[str, int]], title: str,
            *, since: date | None, until: date | None) -> bytes:
    days, series = chart_series(per_day, since=since, until=until)
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    bottom = [0] * len(days)
    x = list(range(len(days)))
    for label, values in series.items():
        if any(values):
            ax1.bar(x, values, bottom=bottom, color=COLOURS[label], label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax1.set_title(title, fontsize=18, fontweight="bold")
    ax1.set_ylabel("appeals (by label)")
    step = max(1, len(days) // 6)
    ax1.set_xticks(x[::step], [d[5:] for d in days[::step]])
    if days and any(bottom):
        ax1.legend(loc="upper left", fontsize=12, ncols=2, frameon=False)
    else:
        ax1.text(0.5, 0.5, "no appeals in this period", ha="center", va="center", transform=ax1.transAxes)
    ax1.spines[["top", "right"]].set_visible(False)
    top = list(by_channel)[:6][::-1]
    ax2.barh([f"@{c}" if not c.startswith("c:") else c for c, _ in top], [n for _, n in top], color="#264653")
    ax2.set_title("most active channels", fontsize=16)
    ax2.set_xlabel("appeals")
    ax2.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
