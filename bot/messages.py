"""Messages as plain data (HTML text and buttons), so that what users read is tested without Telegram.

``bot.shell.adapter`` turns a ``Rendered`` into a Bot API call; everything else builds them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.callbacks import Feedback, Mute
from bot.channels import channel_link
from bot.domain import StoredPost
from models.taxonomy import ADDRESSEE_NAMES, LANG_NAMES, labels_text


@dataclass(frozen=True, slots=True)
class Button:
    text: str
    data: str | None = None  # callback data (≤ 64 bytes)
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """An HTML message and its inline keyboard, as plain data."""

    html: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    forward_from: tuple[int, int] | None = None  # (source chat id, message id) to forward first


# C0 controls but tab and newline, DEL and C1 controls, lone surrogates, the two non-characters:
# raw \x02/\x03 once broke whole search pages, and Telegram refuses some of the others.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_NEWLINES = re.compile("\r\n?|[\u2028\u2029]")


def clean_text(text: str) -> str:
    """Text as users may read it: control characters removed, every line break a ``\\n``."""
    return _CONTROL.sub("", _NEWLINES.sub("\n", text))


def html_text(text: str) -> str:
    """Any text from outside (posts, reasons, titles, what users typed) ready for an HTML message.

    Every renderer (alerts, search results, digests, answers) goes through this one function:
    control characters are stripped, then ``<``, ``>``, ``&`` and quotes are escaped.
    """
    return html.escape(clean_text(text))


def trim_at_word(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,;:—-") + " …"


def render_alert(post: StoredPost, *, text_limit: int = 700, also_in: Sequence[str] = (), reposts: int = 0,
                 forward: bool = False) -> Rendered:
    """The alert users read on a phone: what, to whom, where, the words, and why."""
    score = f"{post.score:.2f}" if post.score is not None else "?"
    lines = [
        f"🚨 <b>Appeal: {html.escape(labels_text(post.labels))}</b> · {score}",
        f"🗣 to {html.escape(ADDRESSEE_NAMES.get(post.addressee or '', post.addressee or 'unknown'))}"
        f" · 🌐 {LANG_NAMES.get(post.lang or 'other', post.lang or '?')}",
        f"📢 {channel_link(post.channel)} · {post.date.strftime('%d %b %Y %H:%M')} UTC",
    ]
    if also_in:
        shown = ", ".join(channel_link(c) for c in list(dict.fromkeys(also_in))[:5])
        lines.append(f"🔁 also in {shown} ({reposts} repost{'s' if reposts != 1 else ''})")
    lines.append(f"<blockquote>{html_text(trim_at_word(clean_text(post.text), text_limit))}</blockquote>")
    if post.reasons:
        because = " · ".join(f"«{html_text(r)}»" for r in post.reasons[:3])
        lines.append(f"<i>Because:</i> {because}")
    lines.append(f'🔗 <a href="{html.escape(post.permalink)}">Open the post</a>')
    buttons = (
        (Button("✅ Correct", data=Feedback("ok", post.id).encode()),
         Button("❌ Not an appeal", data=Feedback("no", post.id).encode())),
        (Button(f"🔕 Mute @{post.channel}"[:40], data=Mute(post.id).encode()),),
    )
    fwd = (post.chat_id, post.message_id) if forward and post.chat_id is not None else None
    return Rendered("\n".join(lines), buttons, fwd)


