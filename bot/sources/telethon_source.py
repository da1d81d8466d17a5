"""Read channels through a Telegram *user* account with Telethon (MTProto).

Why it exists: the web preview shows only public channels and only their newest
page; a user account sees any channel it has joined, with exact edit dates. Why it
is optional: it needs an account (phone login), Telegram bans accounts that read
too much too fast, and nothing can fake MTProto in tests. So Telethon is an extra
(``pip install appealwatch[telethon]``), imported only when this source is used,
and the caller builds, logs in and owns the ``TelegramClient``.

:func:`message_to_post` is pure and works on ``telethon.tl.types.Message`` objects
built offline, which is how it is tested.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from bot.domain import IncomingPost
from bot.sources.base import PostSink

log = logging.getLogger(__name__)

__all__ = ["ChannelUnavailable", "TelethonSource", "message_to_post", "require_telethon"]

INSTALL_HINT = "Telethon is not installed; the Telethon source needs it: pip install appealwatch[telethon]"


class ChannelUnavailable(Exception):
    """The account cannot read this channel (no such username, private, banned)."""

    def __init__(self, reason: str, *, channel: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.channel = channel


def require_telethon() -> ModuleType:
    """Import telethon on first use, with an install hint instead of a bare ImportError."""
    try:
        import telethon
        import telethon.errors
        import telethon.events
        import telethon.tl.types
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(INSTALL_HINT) from exc
    return telethon


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _peer_key(peer: Any, types: Any) -> str | None:
    """A peer as this project names chats it has no username for."""
    if isinstance(peer, types.PeerChannel):
        return f"c:{peer.channel_id}"
    if isinstance(peer, types.PeerUser):
        return f"user:{peer.user_id}"
    if isinstance(peer, types.PeerChat):
        return f"chat:{peer.chat_id}"
    return None


def message_to_post(
    msg: Any,
    channel_username: str | None,
    *,
    channel_title: str | None = None,
    forwarded_name: str | None = None,
) -> IncomingPost | None:
    """Turn a Telethon ``types.Message`` into an :class:`IncomingPost` (None for non-posts).

    ``channel_username`` is the channel's public username (``@`` and case are
    normalised); None for a private channel, which becomes ``"c:<id>"``. Service
    messages, empty messages and messages with neither text nor media give None.
    ``forwarded_name`` lets a caller with a client pass the resolved name of the
    forward's origin; offline, the header's ``from_name`` or a peer key is used.
    A link preview (``MessageMediaWebPage``) is not media: it is part of the text.
    """
    tl = require_telethon()
    types = tl.tl.types
    if not isinstance(msg, types.Message) or msg.date is None:
        return None
    text = msg.message or ""
    media = msg.media
    has_media = media is not None and not isinstance(media, types.MessageMediaEmpty | types.MessageMediaWebPage)
    if not text.strip() and not has_media:
        return None

    peer = msg.peer_id
    chat_id: int | None = None
    if isinstance(peer, types.PeerChannel):
        chat_id = int(f"-100{peer.channel_id}")
    elif isinstance(peer, types.PeerChat):
        chat_id = -peer.chat_id
    elif isinstance(peer, types.PeerUser):
        chat_id = peer.user_id
    if channel_username:
        channel = channel_username.strip().lstrip("@").lower()
    elif isinstance(peer, types.PeerChannel):
        channel = f"c:{peer.channel_id}"
    else:
        channel = _peer_key(peer, types) or "unknown"

    forwarded_from: str | None = None
    fwd = msg.fwd_from
    if fwd is not None:
        forwarded_from = forwarded_name or fwd.from_name or _peer_key(fwd.from_id, types) or fwd.post_author or "hidden"

    reply_to: int | None = None
    reply = msg.reply_to
    # A reply to another chat's message (reply_to_peer_id set) has an id that means nothing here.
    if isinstance(reply, types.MessageReplyHeader) and reply.reply_to_peer_id is None:
        reply_to = reply.reply_to_msg_id

    return IncomingPost(
        channel=channel,
        message_id=int(msg.id),
        text=text,
        date=_aware(msg.date) or datetime.now(UTC),
        source="telethon",
        chat_id=chat_id,
        channel_title=channel_title,
        # edit_hide: Telegram says the edit is not worth showing (e.g. reactions, buttons).
        edit_date=None if msg.edit_hide else _aware(msg.edit_date),
        views=msg.views,
        forwarded_from=forwarded_from,
        reply_to=reply_to,
        has_media=has_media,
    )


UnavailableCallback = Callable[[str, str], Awaitable[None] | None]


class TelethonSource:
    """Backfill with ``iter_messages`` and follow new and edited posts with event handlers.

    The client is given by the caller, already connected and authorised; this class
    never logs in or disconnects. Telethon sleeps through FloodWait errors shorter
    than the client's ``flood_sleep_threshold`` by itself; longer ones are recorded
    with the sink and re-raised so the caller can pause the account.
    """

    def __init__(
        self,
        client: Any,
        sink: PostSink,
        *,
        backfill_limit: int = 500,
        batch_size: int = 100,
        on_unavailable: UnavailableCallback | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tl = require_telethon()
        self.client = client
        self.sink = sink
        self.backfill_limit = backfill_limit
        self.batch_size = batch_size
        self._on_unavailable = on_unavailable
        self._now = now
        self._entities: dict[str, Any] = {}
        self._by_id: dict[int, tuple[str, str | None]] = {}
        self._reported: set[str] = set()
        self._handlers: list[tuple[Callable[[Any], Awaitable[None]], Any]] = []

    # ----------------------------------------------------------------- resolving

    def _key_of(self, entity: Any) -> str:
        username = getattr(entity, "username", None)
        if not username:
            usernames = getattr(entity, "usernames", None) or []
            active = [u.username for u in usernames if getattr(u, "active", False)]
            username = active[0] if active else None
        return username.lower() if username else f"c:{entity.id}"

    async def resolve(self, channel: str) -> Any:
        """The channel's entity (cached); raises :class:`ChannelUnavailable` once reported."""
        name = channel.strip().lstrip("@")
        cached = self._entities.get(name.lower())
        if cached is not None:
            return cached
        errors = self._tl.errors
        target: Any = int(f"-100{name[2:]}") if name.startswith("c:") and name[2:].isdigit() else name
        try:
            entity = await self.client.get_entity(target)
        except (
            ValueError,
            errors.UsernameNotOccupiedError,
            errors.UsernameInvalidError,
            errors.ChannelPrivateError,
            errors.ChannelInvalidError,
        ) as exc:
            reason = f"cannot read {channel}: {type(exc).__name__}: {exc}"
            await self._report_unavailable(name.lower(), reason)
            raise ChannelUnavailable(reason, channel=name.lower()) from exc
        key = self._key_of(entity)
        self._entities[name.lower()] = entity
        self._entities[key] = entity
        self._by_id[int(entity.id)] = (key, getattr(entity, "title", None))
        return entity

    async def _report_unavailable(self, channel: str, reason: str) -> None:
        if channel in self._reported:
            return
        self._reported.add(channel)
        log.warning("telethon: %s", reason)
        await self.sink.record_fetch(channel, ok=False, error=reason, when=self._now())
        if self._on_unavailable is not None:
            try:
                result = self._on_unavailable(channel, reason)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # telling the admin must not break reading the other channels
                log.exception("on_unavailable callback failed for %s", channel)

    # ----------------------------------------------------------------- backfill

    def _forward_name(self, msg: Any) -> str | None:
        """The forward origin's title when the client has already resolved it."""
        forward = getattr(msg, "forward", None)
        chat = getattr(forward, "chat", None) if forward is not None else None
        sender = getattr(forward, "sender", None) if forward is not None else None
        for origin in (chat, sender):
            if origin is None:
                continue
            name = getattr(origin, "title", None) or getattr(origin, "username", None)
            if name:
                return str(name)
        return None

    def _convert(self, msg: Any) -> IncomingPost | None:
        peer = getattr(msg, "peer_id", None)
        channel_id = getattr(peer, "channel_id", None)
        key, title = self._by_id.get(int(channel_id), (None, None)) if channel_id is not None else (None, None)
        username = key if key and not key.startswith("c:") else None
        return message_to_post(msg, username, channel_title=title, forwarded_name=self._forward_name(msg))

    async def _ingest(self, posts: Sequence[IncomingPost]) -> None:
        for start in range(0, len(posts), self.batch_size):
            await self.sink.ingest(posts[start : start + self.batch_size])

    async def backfill(self, channel: str, since_id: int | None = None, limit: int | None = None) -> int:
        """Deliver up to ``limit`` posts newer than ``since_id`` (default: the sink's newest), oldest first."""
        entity = await self.resolve(channel)
        key = self._key_of(entity)
        if since_id is None:
            since_id = await self.sink.last_message_id(key)
        errors = self._tl.errors
        posts: list[IncomingPost] = []
        try:
            async for msg in self.client.iter_messages(
                entity, limit=limit or self.backfill_limit, min_id=since_id or 0
            ):
                post = self._convert(msg)
                if post is not None:
                    posts.append(post)
        except errors.FloodWaitError as exc:
            await self.sink.record_fetch(key, ok=False, error=f"FloodWait: {exc.seconds}s", when=self._now())
            raise
        posts.sort(key=lambda p: p.message_id)  # iter_messages gives newest first
        await self._ingest(posts)
        await self.sink.record_fetch(key, ok=True, when=self._now())
        return len(posts)

    # ----------------------------------------------------------------- live updates

    async def _on_event(self, event: Any) -> None:
        post = self._convert(event.message)
        if post is None:
            return
        if isinstance(event, self._tl.events.MessageEdited.Event) and post.edit_date is None:
            post = replace(post, edit_date=self._now())
        try:
            await self.sink.ingest([post])
            await self.sink.record_fetch(post.channel, ok=True, when=self._now())
        except Exception:  # a failing sink must not kill Telethon's update loop
            log.exception("telethon: ingest failed for %s/%s", post.channel, post.message_id)

    async def start(self, channels: Iterable[str]) -> list[str]:
        """Subscribe to new and edited posts of ``channels``; returns the keys followed.

        Unavailable channels are reported (once) and left out rather than failing all.
        """
        entities = []
        for channel in channels:
            try:
                entities.append(await self.resolve(channel))
            except ChannelUnavailable:
                continue
        if not entities:
            return []
        events = self._tl.events
        for builder in (events.NewMessage(chats=entities), events.MessageEdited(chats=entities)):
            self.client.add_event_handler(self._on_event, builder)
            self._handlers.append((self._on_event, builder))
        return [self._key_of(e) for e in entities]

    def stop(self) -> None:
        """Remove the handlers added by :meth:`start`."""
        for callback, builder in self._handlers:
            self.client.remove_event_handler(callback, builder)
        self._handlers.clear()
