"""The t.me/s poller: fetch pages under a shared budget, schedule channels, report errors.

:class:`WebPreviewSource` fetches pages under one *global* token bucket (a thousand
channels share one request budget, because the throttling is per client, not per
channel), adapts each channel's polling interval to how busy it is, backs off per
channel on errors, and re-delivers posts whose text changed. Parsing is
:mod:`bot.sources.webpreview.parse`; the bucket is :mod:`bot.sources.ratelimit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self

import aiohttp
from yarl import URL

from bot.channels import channel_name, is_username
from bot.domain import IncomingPost
from bot.sources.base import PostSink
from bot.sources.ratelimit import TokenBucket
from bot.sources.webpreview.parse import ParsedPage, ParsedPost, parse_page

log = logging.getLogger(__name__)

__all__ = [
    "ChannelStatus",
    "ChannelUnavailable",
    "ChannelsProvider",
    "FetchError",
    "PollResult",
    "RateLimited",
    "UnavailableCallback",
    "WebPreviewError",
    "WebPreviewSettings",
    "WebPreviewSource",
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
        channel = channel_name(channel)
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
        channel = channel_name(channel)
        if not is_username(channel):
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
        channel = channel_name(channel)
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
        channel = channel_name(channel)
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
        channel = channel_name(channel)
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
            return {channel_name(c) for c in channels if c and c.strip()}
        except Exception:
            log.exception("channels provider failed; keeping %d channels", len(current))
            return current
