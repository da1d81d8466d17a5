"""What ``/status`` says about delivery and failed work: the database's record, not just this run's.

A monitor checking the bot wants to know whether alerts are getting through (sent, still
pending, failed for good, expired) and whether any post could not be classified, with the
reason and the command that retries it.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

from bot.alerts import AlertStats
from bot.pipeline import PipelineStats
from bot.storage import Storage

SHOWN_FAILED_POSTS = 3


async def delivery_status(storage: Storage, alerts: AlertStats, pipeline: PipelineStats) -> str:
    """HTML lines for /status: alerts of the last 24 h by outcome, this run's retries, failed posts."""
    counts = await storage.alert_counts(datetime.now(UTC) - timedelta(hours=24))
    lines = [
        f"delivery, last 24 h: {counts.get('sent', 0)} sent, {counts.get('pending', 0)} pending, "
        f"{counts.get('held', 0)} held, {counts.get('failed', 0)} failed for good (blocked, kicked, chat not found), "
        f"{counts.get('expired', 0)} expired",
        f"this run: {alerts.retried} sends retried, {alerts.postponed} left for the sweep, {alerts.resent} sent again "
        f"after a crash or a pause, {alerts.history} appeals too old to alert; "
        f"{pipeline.retries} classifications retried",
    ]
    waiting, held = await storage.queue_depth()
    if waiting:  # posts stored, not yet classified: with workers ([pipeline] classify_in_bot = false), their backlog
        lines.append(f"classification queue: {waiting} posts waiting, {held} of them claimed by a worker right now")
    lines += await _failed_posts(storage)
    return "\n".join(lines)


async def _failed_posts(storage: Storage) -> list[str]:
    total = await storage.count_failed_posts()
    if not total:
        return []
    lines = [f"⚠️ {total} post{'s' if total != 1 else ''} could not be classified "
             f"(<code>appealwatch reprocess</code> retries them):"]
    for post in await storage.failed_posts(SHOWN_FAILED_POSTS):
        lines.append(f"   #{post.id} @{html.escape(post.channel)}/{post.message_id} · {post.attempts}× · "
                     f"{html.escape(post.error[:120])}")
    return lines
