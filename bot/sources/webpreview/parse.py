"""Pure parsing of one t.me/s page: HTML in, :class:`ParsedPage` out.

No network and no asyncio here, so the parser is tested on saved pages and timed by
``bench/webpreview_parse.py`` alone. :func:`parse_page` never raises for one bad
post: a broken post is logged and skipped so nineteen good ones are not lost with it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from selectolax.lexbor import LexborHTMLParser, LexborNode
from yarl import URL

from bot.channels import channel_name
from bot.domain import IncomingPost

log = logging.getLogger(__name__)

__all__ = ["ParsedPage", "ParsedPost", "html_to_text", "parse_page", "parse_views"]


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
    channel = channel_name(channel)
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
