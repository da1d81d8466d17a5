"""The web-preview source's settings from ``[sources.web]``, one place for the bot and the workers."""

from __future__ import annotations

from bot.config import WebSourceConfig
from bot.sources.webpreview.poller import WebPreviewSettings


def web_settings(web: WebSourceConfig) -> WebPreviewSettings:
    return WebPreviewSettings(
        base_url=web.base_url, min_interval=web.min_interval, max_interval=web.max_interval,
        initial_interval=min(max(web.min_interval, 300.0), web.max_interval),
        requests_per_second=web.requests_per_second, backfill_limit=max(1, web.backfill_limit),
    )


def channel_lease(settings: WebPreviewSettings) -> float:
    """How long a process holds a channel between two refreshes of its poller: three refreshes,
    so one late refresh never hands the channel to another process, and a dead process's
    channels move on within minutes."""
    return 3 * settings.channels_refresh
