"""Read public channels through Telegram's web preview, ``https://t.me/s/<name>``.

Why this source exists: it needs no account and no bot admin rights, so the bot can
watch any public channel. Its costs: the page shows only the ~20 newest posts,
edits are visible only as changed text, and Telegram throttles clients that poll
too often. Hence the shape of this module:

* :func:`parse_page` is pure (HTML in, :class:`ParsedPage` out) and never raises
  for one bad post: a broken post is logged and skipped so nineteen good ones are
  not lost with it.
* :class:`WebPreviewSource` fetches pages under one *global* token bucket (a
  thousand channels share one request budget, because the throttling is per
  client, not per channel), adapts each channel's polling interval to how busy it
  is, backs off per channel on errors, and re-delivers posts whose text changed.

Nothing here imports python-telegram-bot: posts leave through
:class:`~bot.sources.base.PostSink` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import inspect
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
from selectolax.lexbor import LexborHTMLParser, LexborNode
from yarl import URL

from bot.domain import IncomingPost
from bot.sources.base import PostSink

log = logging.getLogger(__name__)

__all__ = [
    "ChannelStatus",
    "ChannelUnavailable",
    "FetchError",
    "ParsedPage",
    "ParsedPost",
    "PollResult",
    "RateLimited",
    "TokenBucket",
    "WebPreviewError",
    "WebPreviewSettings",
    "WebPreviewSource",
    "normalize_channel",
    "parse_page",
    "parse_views",
]

# --------------------------------------------------------------------------- errors


class WebPreviewError(Exception):
    """Base class for everything this source raises."""


class ChannelUnavailable(WebPreviewError):
    """The name has no public message history on t.me/s (missing, private, a user, preview off).

    Not transient: the scheduler reports it once and then only rechecks rarely.
    """

    def __init__(self, reason: str, *, channel: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.channel = channel


class FetchError(WebPreviewError):
    """A transient failure (network, timeout, 5xx): retried with exponential backoff."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(FetchError):
    """HTTP 429. ``retry_after`` is the server's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class ParsedPost:
    """One post of a page plus what :class:`IncomingPost` has no field for.

    ``edited`` is the page's own "edited" mark; it says *that* a post was edited,
    never when, so the source still compares texts between polls.
    """

    post: IncomingPost
    edited: bool = False


@dataclass(frozen=True, slots=True)
class ParsedPage:
    """What one t.me/s page says.

    ``before`` is the cursor for the next-older page: the "load more" link's
    ``data-before`` or, without that link, the smallest id on the page (None on a
    page without posts). ``has_more`` tells which of the two it was.
    ``is_channel_page`` is False for contact/redirect pages without message
    history; ``unavailable_reason`` then says why in words an admin understands.
    """

    channel: str
    title: str | None
    posts: tuple[ParsedPost, ...]
    before: int | None
    has_more: bool
    is_channel_page: bool
    unavailable_reason: str | None = None
    skipped_service: int = 0
    failed: int = 0

    @property
    def min_id(self) -> int | None:
        return min((p.post.message_id for p in self.posts), default=None)


_USERNAME_RE = re.compile(r"^[a-z][a-z0-9_]{3,31}$")
_WS_WITH_NEWLINE = re.compile(r"[ \t\r\f]*\n[ \t\r\n\f]*")
_VIEWS_RE = re.compile(r"^([0-9]+(?:[.,][0-9]+)?)\s*([KMB]?)$", re.IGNORECASE)
_POST_ID_RE = re.compile(r"/(\d+)(?:[?#].*)?$")
# Blocks that reuse the message-text markup but belong to another message (the reply
# quote) or another site (the link preview): their text must never become the post's.
_FOREIGN_BLOCKS = frozenset({"tgme_widget_message_reply", "tgme_widget_message_link_preview"})
_BLOCK_TAGS = frozenset({"div", "p", "blockquote", "pre", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6"})
_SKIP_TAGS = frozenset({"script", "style", "template", "svg"})
_MEDIA_CLASSES = frozenset(
    {
        "tgme_widget_message_photo_wrap",
        "tgme_widget_message_video_player",
        "tgme_widget_message_video",
        "tgme_widget_message_roundvideo_player",
        "tgme_widget_message_document_wrap",
        "tgme_widget_message_voice_player",
        "tgme_widget_message_sticker_wrap",
        "tgme_widget_message_grouped_wrap",
    }
)
# Everything a post's fields come from, in ONE query per page: running ~9 queries per post
# made parse_page three times slower (bench/webpreview_parse.py).
_FIELD_SELECTOR = ", ".join(
    (
        ".tgme_widget_message_text",
        "time[datetime]",
        ".tgme_widget_message_views",
        ".tgme_widget_message_forwarded_from_name",
        "a.tgme_widget_message_reply",
        ".tgme_widget_message_edited",
        ".tgme_widget_message_meta",
        ".message_media_not_supported_label",
        *(f".{c}" for c in sorted(_MEDIA_CLASSES)),
    )
)
_MULTIPLIERS = {"": 1, "K": 1_000, "M": 1_000_000, "B": 1_000_000_000}


def normalize_channel(name: str) -> str:
    """``@Name``, ``t.me/s/Name``, ``https://t.me/Name/12`` → ``name`` (the form storage uses)."""
    value = name.strip()
    for prefix in ("https://", "http://"):
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
    lowered = value.lower()
    for host in ("t.me/", "telegram.me/", "www.t.me/"):
        if lowered.startswith(host):
            value = value[len(host) :]
            if value.lower().startswith("s/"):
                value = value[2:]
            value = value.split("/", 1)[0].split("?", 1)[0]
            break
    return value.lstrip("@").lower()


def parse_views(raw: str | None) -> int | None:
    """``"956"`` → 956, ``"1.2K"`` → 1200, ``"3.4M"`` → 3_400_000; None when unreadable."""
    if not raw:
        return None
    cleaned = raw.strip().replace("\u00a0", "").replace(" ", "")
    match = _VIEWS_RE.match(cleaned)
    if match is None:
        return None
    number, suffix = match.groups()
    return round(float(number.replace(",", ".")) * _MULTIPLIERS[suffix.upper()])


def _classes(node: LexborNode) -> list[str]:
    return (node.attributes.get("class") or "").split()


def _owner(node: LexborNode) -> int | None:
    """``mem_id`` of the post ``node`` belongs to; None inside a reply quote or link preview."""
    current = node.parent
    while current is not None:
        attrs = current.attributes
        if "data-post" in attrs:
            return current.mem_id
        if not _FOREIGN_BLOCKS.isdisjoint((attrs.get("class") or "").split()):
            return None
        current = current.parent
    return None


@dataclass(slots=True)
class _Fields:
    """The nodes of one post that its fields are read from (its own, never a quote's)."""

    texts: list[LexborNode] = field(default_factory=list)
    times: list[LexborNode] = field(default_factory=list)
    views: LexborNode | None = None
    forwarded: LexborNode | None = None
    reply: LexborNode | None = None
    meta: LexborNode | None = None
    edited_mark: bool = False
    media: bool = False

    def add(self, node: LexborNode) -> None:
        classes = (node.attributes.get("class") or "").split()
        if node.tag == "time":
            self.times.append(node)
        if "tgme_widget_message_text" in classes:
            self.texts.append(node)
        if "tgme_widget_message_views" in classes and self.views is None:
            self.views = node
        if "tgme_widget_message_forwarded_from_name" in classes and self.forwarded is None:
            self.forwarded = node
        if "tgme_widget_message_reply" in classes and node.tag == "a" and self.reply is None:
            self.reply = node
        if "tgme_widget_message_meta" in classes and self.meta is None:
            self.meta = node
        if "tgme_widget_message_edited" in classes:
            self.edited_mark = True
        if "message_media_not_supported_label" in classes:
            self.media |= "media is too big" in (node.text(deep=True) or "").lower()
        if _MEDIA_CLASSES.intersection(classes):
            self.media = True


def _index_fields(tree: LexborHTMLParser) -> dict[int, _Fields]:
    index: dict[int, _Fields] = {}
    for node in tree.css(_FIELD_SELECTOR):
        owner = _owner(node)
        if owner is not None:
            index.setdefault(owner, _Fields()).add(node)
    return index


def _strip_scheme(url: str) -> str:
    lowered = url.strip().lower()
    for prefix in ("https://", "http://", "mailto:", "tel:"):
        if lowered.startswith(prefix):
            lowered = lowered[len(prefix) :]
            break
    if lowered.startswith("www."):
        lowered = lowered[4:]
    return lowered.rstrip("/")


def _link_text(text: str, href: str | None) -> str:
    """A link as plain text: ``"text (url)"`` unless the url adds nothing to the text.

    Hashtag links (``?q=%23tag``) and ``@mention`` links to the mentioned name say
    nothing the text does not, and Telegram shows long URLs shortened with ``…``.
    """
    href = (href or "").strip()
    if not href or href.startswith(("?q=", "#", "javascript:")):
        return text
    if not text.strip():
        return href
    shown = _strip_scheme(text)
    target = _strip_scheme(href)
    if shown == target or (shown.endswith("…") and target.startswith(shown[:-1])):
        return text
    if text.startswith("@") and target.rsplit("/", 1)[-1] == text[1:].lower():
        return text
    return f"{text} ({href})"


def _render(node: LexborNode, out: list[str]) -> None:
    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            out.append(_WS_WITH_NEWLINE.sub(" ", child.text_content or ""))
        elif tag == "br":
            out.append("\n")
        elif tag in _SKIP_TAGS or tag == "-comment":
            continue
        elif tag == "a":
            inner: list[str] = []
            _render(child, inner)
            out.append(_link_text("".join(inner), child.attributes.get("href")))
        elif tag in _BLOCK_TAGS:
            if out and not out[-1].endswith("\n"):
                out.append("\n")
            _render(child, out)
            out.append("\n")
        else:
            _render(child, out)


def html_to_text(node: LexborNode) -> str:
    """Plain text of a message block: ``<br>`` and block ends become newlines.

    Raw newlines inside text nodes are source formatting, not content (Telegram
    encodes line breaks as ``<br>``), so they collapse to a space as a browser would.
    """
    parts: list[str] = []
    _render(node, parts)
    lines = [line.rstrip() for line in "".join(parts).split("\n")]
    text = "\n".join(lines).strip("\n ")
    return re.sub(r"\n{3,}", "\n\n", text)


def _parse_datetime(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _post_id(data_post: str) -> int:
    return int(data_post.rsplit("/", 1)[-1])


def _reply_to(reply: LexborNode | None, channel: str) -> int | None:
    href = reply.attributes.get("href") if reply is not None else None
    if not href:
        return None
    match = _POST_ID_RE.search(href)
    if match is None:
        return None
    # A reply to another chat's post has that chat in its link; its id means nothing here.
    path = URL(href).path.strip("/").split("/")
    if len(path) < 2 or path[-2].lower() != channel:
        return None
    return int(match.group(1))


def _is_edited(fields: _Fields) -> bool:
    if fields.edited_mark:
        return True
    return fields.meta is not None and "edited" in (fields.meta.text(deep=True) or "").lower()


def _text_block(fields: _Fields) -> LexborNode | None:
    for block in fields.texts:
        if "js-message_text" in _classes(block):
            return block
    return fields.texts[0] if fields.texts else None


def _post_time(fields: _Fields) -> LexborNode:
    """The post's own timestamp: the one in its date link (a video's duration is a <time> too)."""
    for node in fields.times:
        parent = node.parent
        if "datetime" in node.attributes and parent is not None and "tgme_widget_message_date" in _classes(parent):
            return node
    for node in fields.times:
        if "datetime" in node.attributes:
            return node
    raise ValueError("no time[datetime]")


def _parse_post(message: LexborNode, fields: _Fields, channel: str, title: str | None) -> ParsedPost:
    message_id = _post_id(message.attributes.get("data-post") or "")
    date = _parse_datetime(_post_time(fields).attributes.get("datetime") or "")
    block = _text_block(fields)
    forwarded = (fields.forwarded.text(deep=True) or "").strip() if fields.forwarded is not None else ""
    post = IncomingPost(
        channel=channel,
        message_id=message_id,
        text=html_to_text(block) if block is not None else "",
        date=date,
        source="web",
        channel_title=title,
        views=parse_views(fields.views.text(deep=True)) if fields.views is not None else None,
        forwarded_from=forwarded or None,
        reply_to=_reply_to(fields.reply, channel),
        has_media=fields.media,
    )
    return ParsedPost(post=post, edited=_is_edited(fields))


def _node_text(tree: LexborHTMLParser, selector: str) -> str | None:
    node = tree.css_first(selector)
    if node is None:
        return None
    return (node.text(deep=True) or "").strip() or None


def _unavailable_reason(tree: LexborHTMLParser, channel: str) -> str:
    """Why a page without history has none, from what the contact page shows."""
    title = _node_text(tree, ".tgme_page_title")
    extra = (_node_text(tree, ".tgme_page_extra") or "").lower()
    if title is None:
        return f"no public channel @{channel} (the name is free, deleted or private)"
    if "subscriber" in extra:
        return f"@{channel} is a channel without a public web preview (t.me/s/{channel} is turned off)"
    if "member" in extra or "online" in extra:
        return f"@{channel} is a group, not a channel with a public web preview"
    if extra.startswith("@") or "bot" in extra:
        return f"@{channel} is a user or bot, not a channel"
    return f"t.me/s/{channel} shows no message history"


def parse_page(html: str, channel: str) -> ParsedPage:
    """Parse one t.me/s page. Never raises for a bad post; see :class:`ParsedPage`."""
    channel = normalize_channel(channel)
    tree = LexborHTMLParser(html)
    title = _node_text(tree, ".tgme_channel_info_header_title") or _node_text(tree, ".tgme_header_title")
    if title is None:
        og = tree.css_first('meta[property="og:title"]')
        title = (og.attributes.get("content") or None) if og is not None else None
    messages = tree.css(".tgme_widget_message[data-post]")
    is_channel_page = bool(messages) or tree.css_first(".tgme_channel_history") is not None
    if not is_channel_page:
        return ParsedPage(
            channel=channel,
            title=_node_text(tree, ".tgme_page_title"),
            posts=(),
            before=None,
            has_more=False,
            is_channel_page=False,
            unavailable_reason=_unavailable_reason(tree, channel),
        )

    fields = _index_fields(tree)
    posts: list[ParsedPost] = []
    ids: list[int] = []
    service = failed = 0
    for message in messages:
        data_post = message.attributes.get("data-post") or ""
        try:
            ids.append(_post_id(data_post))
        except ValueError:
            pass
        if "service_message" in _classes(message):
            service += 1
            continue
        try:
            posts.append(_parse_post(message, fields.get(message.mem_id) or _Fields(), channel, title))
        except Exception as exc:  # one broken post must not cost the page
            failed += 1
            log.warning("t.me/s/%s: skipping post %r that failed to parse: %r", channel, data_post, exc)
    posts.sort(key=lambda p: p.post.message_id)

    before: int | None = None
    has_more = False
    more = tree.css_first("a.tme_messages_more[data-before]")
    if more is not None:
        with contextlib.suppress(ValueError):
            before = int(more.attributes.get("data-before") or "")
            has_more = True
    if before is None and ids:
        before = min(ids)
    return ParsedPage(
        channel=channel,
        title=title,
        posts=tuple(posts),
        before=before,
        has_more=has_more,
        is_channel_page=True,
        skipped_service=service,
        failed=failed,
    )


# --------------------------------------------------------------------------- rate limiting


class TokenBucket:
    """A global request budget: ``rate`` requests per second, bursts up to ``burst``.

    Waiters are served in arrival order (``asyncio.Lock`` is FIFO), so a thousand
    channels queue fairly instead of racing. ``pause`` empties the bucket for a while:
    a 429 from Telegram is about this client, not about one channel.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Wait until one request may be made."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._refill(now)
                # The tolerance and the floor on the sleep keep float rounding (0.9999…) from
                # turning the wait into a spin of ever smaller sleeps.
                if self._tokens >= 1 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep(max((1 - self._tokens) / self.rate, 1e-3))

    def pause(self, seconds: float) -> None:
        """Allow no request for ``seconds`` (and start from an empty bucket after)."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._updated = max(self._updated, self._paused_until)


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True, slots=True)
class WebPreviewSettings:
    """Every knob of the web-preview source, validated once.

    The defaults are polite for one client watching hundreds of channels: about one
    request per second overall, a busy channel at most once a minute, a quiet one at
    least once every two hours.
    """

    base_url: str = "https://t.me"
    min_interval: float = 60.0
    max_interval: float = 7200.0
    initial_interval: float = 600.0
    requests_per_second: float = 1.0
    burst: int = 3
    max_concurrency: int = 4
    backfill_limit: int = 200
    user_agent: str = "AppealWatch/0.1 (monitoring public appeals; contact the bot admin)"
    connect_timeout: float = 10.0
    total_timeout: float = 30.0
    jitter: float = 0.1
    base_backoff: float = 30.0
    max_backoff: float = 3600.0
    max_retry_after: float = 3600.0
    unavailable_recheck: float = 6 * 3600.0
    edit_window: int = 60
    max_page_bytes: int = 4 * 1024 * 1024
    channels_refresh: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.initial_interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= initial_interval <= max_interval")
        if self.requests_per_second <= 0 or self.burst < 1 or self.max_concurrency < 1:
            raise ValueError("requests_per_second > 0, burst >= 1 and max_concurrency >= 1 required")
        if self.backfill_limit < 1 or self.edit_window < 0 or not 0 <= self.jitter < 1:
            raise ValueError("backfill_limit >= 1, edit_window >= 0 and 0 <= jitter < 1 required")
        if self.base_backoff <= 0 or self.max_backoff < self.base_backoff:
            raise ValueError("need 0 < base_backoff <= max_backoff")


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll of one channel did."""

    channel: str
    new: int
    edited: int
    requests: int
    last_message_id: int | None


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """A read-only view of a channel's schedule (for /channels, tests and benches).

    ``next_due`` is on the source's monotonic clock, not wall time.
    """

    channel: str
    interval: float
    failures: int
    last_message_id: int | None
    unavailable: str | None
    next_due: float | None


@dataclass(slots=True)
class _ChannelState:
    interval: float
    last_id: int | None = None
    last_id_known: bool = False
    failures: int = 0
    unavailable: str | None = None
    next_due: float | None = None
    # message id -> short hash of its text, for the newest ``edit_window`` posts seen.
    hashes: dict[int, bytes] = field(default_factory=dict)


UnavailableCallback = Callable[[str, str], Awaitable[None] | None]
ChannelsProvider = Callable[[], Iterable[str] | Awaitable[Iterable[str]]]


def _text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class WebPreviewSource:
    """Poll public channels' t.me/s pages and feed new and edited posts to a sink.

    Use ``poll_once`` / ``backfill`` directly, or ``run`` for the scheduler. The
    aiohttp session may be passed in (then the caller closes it) or is created on
    first use and closed by :meth:`close` / ``async with``.
    """

    def __init__(
        self,
        sink: PostSink,
        settings: WebPreviewSettings | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        on_unavailable: UnavailableCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self.settings = settings or WebPreviewSettings()
        self._session = session
        self._owns_session = session is None
        self._on_unavailable = on_unavailable
        self._clock = clock
        self._now = now
        self._rng = rng or random.Random()
        self.bucket = TokenBucket(self.settings.requests_per_second, self.settings.burst, clock=clock)
        self._states: dict[str, _ChannelState] = {}
        self._wake = asyncio.Event()
        self.requests = 0  # HTTP requests made, all channels (for benches and /status)

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            s = self.settings
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=s.total_timeout, sock_connect=s.connect_timeout),
                headers={"User-Agent": s.user_agent, "Accept-Language": "en-US,en;q=0.8"},
            )
            self._owns_session = True
        return self._session

    # ----------------------------------------------------------------- state

    def _state(self, channel: str) -> _ChannelState:
        state = self._states.get(channel)
        if state is None:
            state = self._states[channel] = _ChannelState(interval=self.settings.initial_interval)
        return state

    def status(self, channel: str) -> ChannelStatus:
        channel = normalize_channel(channel)
        st = self._state(channel)
        return ChannelStatus(channel, st.interval, st.failures, st.last_id, st.unavailable, st.next_due)

    # ----------------------------------------------------------------- HTTP

    def _page_url(self, channel: str, before: int | None) -> URL:
        url = URL(self.settings.base_url.rstrip("/") + f"/s/{channel}")
        return url.with_query(before=str(before)) if before is not None else url

    async def _get(self, url: URL) -> tuple[int, str, Mapping[str, str]]:
        """One budgeted GET without following redirects; returns (status, body, headers)."""
        await self.bucket.acquire()
        self.requests += 1
        s = self.settings
        # Telegram localises "edited" and "Media is too big"; ask for English so the parser's words match.
        headers = {"User-Agent": s.user_agent, "Accept-Language": "en-US,en;q=0.8"}
        try:
            async with self._get_session().get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=s.total_timeout, sock_connect=s.connect_timeout),
            ) as resp:
                if resp.status in (301, 302, 303, 307, 308) or resp.status >= 400:
                    return resp.status, "", resp.headers
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > s.max_page_bytes:
                        raise FetchError(f"page larger than {s.max_page_bytes} bytes: {url}")
                return resp.status, body.decode(resp.charset or "utf-8", errors="replace"), resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(f"{type(exc).__name__} fetching {url}: {exc}") from exc

    async def fetch_page(self, channel: str, before: int | None = None) -> ParsedPage:
        """Fetch and parse one page; raises ChannelUnavailable / RateLimited / FetchError."""
        channel = normalize_channel(channel)
        if not _USERNAME_RE.match(channel):
            reason = f"{channel!r} is not a public channel username (t.me/s needs one)"
            raise ChannelUnavailable(reason, channel=channel)
        url = self._page_url(channel, before)
        for _hop in range(3):
            status, body, headers = await self._get(url)
            if status == 429:
                retry = _retry_after(headers.get("Retry-After"))
                raise RateLimited(f"HTTP 429 from {url.host} (Retry-After: {retry})", retry_after=retry)
            if status in (301, 302, 303, 307, 308):
                location = headers.get("Location")
                if not location:
                    raise FetchError(f"HTTP {status} without Location from {url}", status=status)
                target = url.join(URL(location))
                if target.path.startswith("/s/") and target.host == url.host:
                    url = target  # e.g. a canonical-case redirect; still a preview
                    continue
                raise ChannelUnavailable(await self._reason_from(channel, target), channel=channel)
            if status == 404:
                raise ChannelUnavailable(f"no public channel @{channel} (HTTP 404)", channel=channel)
            if status >= 400:
                raise FetchError(f"HTTP {status} from {url}", status=status)
            page = parse_page(body, channel)
            if not page.is_channel_page:
                raise ChannelUnavailable(page.unavailable_reason or "no message history", channel=channel)
            return page
        raise FetchError(f"too many redirects from {self._page_url(channel, before)}")

    async def _reason_from(self, channel: str, target: URL) -> str:
        """Why /s/<name> redirected away; reads the contact page once, never after the report."""
        known = self._state(channel).unavailable
        if known is not None:
            return known
        base = URL(self.settings.base_url)
        if target.host != base.host:
            return f"t.me/s/{channel} redirects to {target}"
        try:
            status, body, _headers = await self._get(target)
        except FetchError:
            return f"no web preview for @{channel} (redirected to {target.path})"
        if status >= 300 or not body:
            return f"no web preview for @{channel} (redirected to {target.path})"
        return parse_page(body, channel).unavailable_reason or f"no web preview for @{channel}"

    # ----------------------------------------------------------------- walking pages

    async def _walk(
        self, channel: str, first: ParsedPage, since_id: int | None, limit: int
    ) -> tuple[list[ParsedPost], int]:
        """Posts newer than ``since_id`` (at most ``limit``, newest kept) from ``first`` back.

        Follows ``?before=`` while pages still hold posts above ``since_id``; stops
        when a page adds nothing older (the channel's start) or the cursor stalls.
        """
        found: dict[int, ParsedPost] = {}
        requests = 0
        page = first
        while True:
            older = [p for p in page.posts if since_id is None or p.post.message_id > since_id]
            for p in older:
                found.setdefault(p.post.message_id, p)
            page_min = page.before if page.before is not None else page.min_id
            reached = since_id is not None and (
                len(older) < len(page.posts) or (page_min is not None and page_min <= since_id + 1)
            )
            if reached or len(found) >= limit or not older or page_min is None or page_min <= 1:
                break
            cursor = page_min
            page = await self.fetch_page(channel, before=cursor)
            requests += 1
            if page.min_id is not None and page.min_id >= cursor:
                log.warning("t.me/s/%s?before=%d returned no older posts; stopping", channel, cursor)
                break
        ids = sorted(found)
        if since_id is not None and (len(ids) > limit or (len(ids) == limit and not reached)):
            log.warning(
                "t.me/s/%s: more than %d posts since %d; delivering the newest %d, older ones are skipped",
                channel,
                limit,
                since_id,
                limit,
            )
        return [found[i] for i in ids[-limit:]], requests

    def _remember(self, state: _ChannelState, posts: Iterable[ParsedPost]) -> None:
        for p in posts:
            state.hashes[p.post.message_id] = _text_hash(p.post.text)
        extra = len(state.hashes) - self.settings.edit_window
        if extra > 0:
            for message_id in sorted(state.hashes)[:extra]:
                del state.hashes[message_id]

    async def _deliver(self, posts: Sequence[IncomingPost]) -> None:
        if posts:
            await self.sink.ingest(sorted(posts, key=lambda p: p.message_id))

    # ----------------------------------------------------------------- public operations

    async def _fetch_new(
        self, channel: str, state: _ChannelState, since_id: int | None, limit: int
    ) -> tuple[ParsedPage, list[ParsedPost], int]:
        """The newest page and the posts above ``since_id``, reporting failures to the sink.

        An unavailable channel is reported once (sink and ``on_unavailable``); transient
        failures are recorded every time, since /channels counts them.
        """
        try:
            first = await self.fetch_page(channel)
            posts, requests = await self._walk(channel, first, since_id, limit)
        except ChannelUnavailable as exc:
            await self._report_unavailable(channel, state, exc.reason)
            raise
        except FetchError as exc:
            await self.sink.record_fetch(channel, ok=False, error=str(exc), when=self._now())
            raise
        if state.unavailable is not None:
            log.info("t.me/s/%s is available again", channel)
            state.unavailable = None
        return first, posts, requests + 1

    async def backfill(self, channel: str, since_id: int | None = None, limit: int | None = None) -> int:
        """Deliver up to ``limit`` posts newer than ``since_id``, walking ``?before=`` pages.

        Returns how many posts were handed to the sink (oldest first). Raises like
        :meth:`poll_once`.
        """
        channel = normalize_channel(channel)
        state = self._state(channel)
        first, posts, _requests = await self._fetch_new(channel, state, since_id, limit or self.settings.backfill_limit)
        await self._deliver([p.post for p in posts])
        self._remember(state, first.posts)
        if posts:
            state.last_id = max(state.last_id or 0, posts[-1].post.message_id)
            state.last_id_known = True
        await self.sink.record_fetch(channel, ok=True, when=self._now())
        return len(posts)

    async def poll_once(self, channel: str) -> PollResult:
        """Fetch the newest page, deliver new posts (backfilling a gap) and edited ones.

        Edits are seen only on the newest page (the one fetched anyway) and only for
        posts whose text this process has seen before: the first sight after a
        restart just remembers the text. Records the fetch with the sink. Raises
        :class:`ChannelUnavailable` (reported to the sink and ``on_unavailable`` only
        the first time), :class:`RateLimited` or :class:`FetchError`.
        """
        channel = normalize_channel(channel)
        state = self._state(channel)
        if not state.last_id_known:
            state.last_id = await self.sink.last_message_id(channel)
            state.last_id_known = True
        since = state.last_id
        first, new_posts, requests = await self._fetch_new(channel, state, since, self.settings.backfill_limit)
        edited: list[IncomingPost] = []
        if since is not None:
            now = self._now()
            for p in first.posts:
                if p.post.message_id > since:
                    continue
                old = state.hashes.get(p.post.message_id)
                if old is not None and old != _text_hash(p.post.text):
                    edited.append(replace(p.post, edit_date=now))
        await self._deliver([p.post for p in new_posts] + edited)
        self._remember(state, first.posts)
        self._remember(state, new_posts)
        if new_posts:
            state.last_id = max(since or 0, new_posts[-1].post.message_id)
        await self.sink.record_fetch(channel, ok=True, when=self._now())
        return PollResult(channel, len(new_posts), len(edited), requests, state.last_id)

    async def _report_unavailable(self, channel: str, state: _ChannelState, reason: str) -> None:
        if state.unavailable is not None:
            return
        state.unavailable = reason
        log.warning("t.me/s/%s unavailable: %s", channel, reason)
        await self.sink.record_fetch(channel, ok=False, error=reason, when=self._now())
        if self._on_unavailable is not None:
            try:
                result = self._on_unavailable(channel, reason)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_unavailable callback failed for %s", channel)

    # ----------------------------------------------------------------- scheduling

    def _jittered(self, seconds: float) -> float:
        return seconds * (1 + self._rng.uniform(0, self.settings.jitter))

    def _backoff(self, failures: int) -> float:
        s = self.settings
        return min(s.max_backoff, s.base_backoff * 2 ** min(failures - 1, 30))

    async def poll_and_schedule(self, channel: str) -> float:
        """Poll ``channel`` once, never raising for its errors; return seconds until the next poll.

        Success adapts the interval (halved after new posts, doubled after none,
        within [min_interval, max_interval]); errors back off exponentially, a 429
        at least for its Retry-After (and pauses every request, since the limit is
        per client); an unavailable channel is rechecked rarely.
        """
        channel = normalize_channel(channel)
        state = self._state(channel)
        s = self.settings
        try:
            result = await self.poll_once(channel)
        except ChannelUnavailable:
            delay = s.unavailable_recheck
        except RateLimited as exc:
            state.failures += 1
            retry = min(exc.retry_after, s.max_retry_after) if exc.retry_after is not None else None
            if retry is not None:
                self.bucket.pause(retry)
            delay = max(retry or 0.0, self._backoff(state.failures))
            log.warning("t.me/s/%s: rate limited, next try in %.1fs", channel, delay)
        except FetchError as exc:
            state.failures += 1
            delay = self._backoff(state.failures)
            log.warning("t.me/s/%s: %s; retry %d in %.1fs", channel, exc, state.failures, delay)
        except Exception as exc:  # a sink failure or a bug: keep the scheduler alive, retry later
            state.failures += 1
            delay = self._backoff(state.failures)
            log.exception("t.me/s/%s: poll failed, retry in %.1fs", channel, delay)
            with contextlib.suppress(Exception):
                await self.sink.record_fetch(channel, ok=False, error=repr(exc), when=self._now())
        else:
            state.failures = 0
            if result.new or result.edited:
                state.interval = max(s.min_interval, state.interval / 2)
            else:
                state.interval = min(s.max_interval, state.interval * 2)
            delay = state.interval
        delay = self._jittered(delay)
        state.next_due = self._clock() + delay
        return delay

    async def run(self, channels_provider: ChannelsProvider) -> None:
        """Poll every channel ``channels_provider()`` returns, forever (cancel to stop).

        The provider is called again every ``channels_refresh`` seconds, so channels
        added or removed by admins are picked up without a restart. New channels
        start at a random offset within their first interval so a restart does not
        fire a thousand requests at once (the token bucket would queue them anyway).
        """
        s = self.settings
        heap: list[tuple[float, int, str]] = []
        seq = 0
        active: set[str] = set()
        busy: set[str] = set()
        queued: set[str] = set()
        limiter = asyncio.Semaphore(s.max_concurrency)
        next_refresh = self._clock()

        def push(channel: str, due: float) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (due, seq, channel))
            queued.add(channel)

        async def cycle(channel: str) -> None:
            try:
                delay = await self.poll_and_schedule(channel)
                if channel in active:
                    push(channel, self._clock() + delay)
            finally:
                busy.discard(channel)
                limiter.release()
                self._wake.set()

        async with asyncio.TaskGroup() as tasks:
            while True:
                now = self._clock()
                if now >= next_refresh:
                    fresh = await self._provide(channels_provider, active)
                    for channel in sorted(fresh - active):
                        if channel not in queued and channel not in busy:
                            spread = min(s.initial_interval, max(s.min_interval, len(fresh) / s.requests_per_second))
                            push(channel, now + self._rng.uniform(0, spread))
                    for gone in active - fresh - busy:
                        self._states.pop(gone, None)  # memory stays bounded by the channels watched
                    active = fresh
                    next_refresh = now + s.channels_refresh
                while heap and heap[0][2] not in active:
                    queued.discard(heapq.heappop(heap)[2])
                wait = next_refresh - now
                if heap:
                    wait = min(wait, heap[0][0] - now)
                if wait > 0:
                    self._wake.clear()
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                    # arrives as the event is set, and run() would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    continue
                if not heap:
                    continue
                _due, _seq, channel = heapq.heappop(heap)
                queued.discard(channel)
                await limiter.acquire()
                busy.add(channel)
                tasks.create_task(cycle(channel), name=f"webpreview:{channel}")

    async def _provide(self, provider: ChannelsProvider, current: set[str]) -> set[str]:
        try:
            result = provider()
            channels = await result if inspect.isawaitable(result) else result
            return {normalize_channel(c) for c in channels if c and c.strip()}
        except Exception:
            log.exception("channels provider failed; keeping %d channels", len(current))
            return current
