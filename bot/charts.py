"""Pictures for digests and /trend: appeals per day by label, and the most active channels.

Rendered headless (Agg) at a phone-friendly size: large type, a legend, dates on the axis.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from models.taxonomy import LABELS

COLOURS = {
    "surrender": "#2a9d8f", "desertion": "#e9c46a", "family": "#f4a261",
    "pow": "#e76f51", "civilians": "#457b9d", "threat": "#9b2226",
}
SIZE_INCHES = (8.0, 9.0)
DPI = 120


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
    """PNG bytes: stacked bars of appeals per day by label (top), channels (bottom)."""
    days, series = chart_series(per_day, since=since, until=until)
    plt.rcParams.update({"font.size": 15})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=SIZE_INCHES, dpi=DPI, gridspec_kw={"height_ratios": [3, 2]})
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
    plt.close(fig)
    return buf.getvalue()
