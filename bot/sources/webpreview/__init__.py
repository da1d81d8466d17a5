"""Read public channels through Telegram's web preview, ``https://t.me/s/<name>``.

Why this source exists: it needs no account and no bot admin rights, so the bot can
watch any public channel. Its costs: the page shows only the ~20 newest posts,
edits are visible only as changed text, and Telegram throttles clients that poll
too often. Hence the shape of this package:

* :mod:`.parse` – :func:`parse_page` is pure (HTML in, :class:`ParsedPage` out, no
  network, no asyncio) and never raises for one bad post: a broken post is logged
  and skipped so nineteen good ones are not lost with it.
* :mod:`.poller` – :class:`WebPreviewSource` fetches pages under one *global* token
  bucket (:class:`bot.sources.ratelimit.TokenBucket`: a thousand channels share one
  request budget, because the throttling is per client, not per channel), adapts
  each channel's polling interval to how busy it is, backs off per channel on
  errors, and re-delivers posts whose text changed.

Channel names are read by :func:`bot.channels.channel_name`, the project's one
normaliser.

Nothing here imports python-telegram-bot: posts leave through
:class:`~bot.sources.base.PostSink` only. Every module logs under
``bot.sources.webpreview.*``, so ``logging.getLogger("bot.sources.webpreview")``
still sees (and filters) all of it.
"""

from __future__ import annotations

from bot.sources.ratelimit import TokenBucket
from bot.sources.webpreview.parse import ParsedPage, ParsedPost, html_to_text, parse_page, parse_views
from bot.sources.webpreview.poller import (
    ChannelsProvider,
    ChannelStatus,
    ChannelUnavailable,
    FetchError,
    PollResult,
    RateLimited,
    UnavailableCallback,
    WebPreviewError,
    WebPreviewSettings,
    WebPreviewSource,
)

__all__ = [
    "ChannelStatus",
    "ChannelUnavailable",
    "ChannelsProvider",
    "FetchError",
    "ParsedPage",
    "ParsedPost",
    "PollResult",
    "RateLimited",
    "TokenBucket",
    "UnavailableCallback",
    "WebPreviewError",
    "WebPreviewSettings",
    "WebPreviewSource",
    "html_to_text",
    "parse_page",
    "parse_views",
]
