"""Channel identity in one place: keys, usernames, links users paste, links we print.

A channel's *key* is what storage, filters and alerts use: its public username in lower
case (no ``@``), or ``c:<id>`` for a channel without one (the chat id without its ``-100``
prefix; a colon never occurs in a username). Every other module asks this one, so that a
``t.me/c/…`` link pasted into ``/relabel`` finds the same post ``/similar`` finds.
"""

from __future__ import annotations

import html
import re

_HOSTS = ("t.me/", "telegram.me/", "www.t.me/", "telegram.dog/")
_USERNAME = re.compile(r"^[a-z][a-z0-9_]{3,31}$")
_POST_LINK = re.compile(
    r"^(?:https?://)?(?:www\.)?(?:t\.me|telegram\.me|telegram\.dog)/(?:s/)?(?:(?P<private>c)/)?(?P<name>[\w]+)/(?P<mid>\d{1,18})/?(?:\?.*)?$",
    re.IGNORECASE,
)


def channel_name(text: str) -> str:
    """``@Name``, ``t.me/s/Name`` or ``https://t.me/Name/12`` → ``name``, without judging the result."""
    value = text.strip()
    for scheme in ("https://", "http://"):
        if value.lower().startswith(scheme):
            value = value[len(scheme):]
    lowered = value.lower()
    for host in _HOSTS:
        if lowered.startswith(host):
            value = value[len(host):]
            if value.lower().startswith("s/"):
                value = value[2:]
            value = value.split("/", 1)[0].split("?", 1)[0]
            break
    return value.lstrip("@").lower()


def is_username(name: str) -> bool:
    """Telegram's rule for public usernames: 4–32 characters (4 for collectible ones), a letter first,
    then letters, digits, ``_``."""
    return bool(_USERNAME.match(name))


def normalise_channel(text: str) -> str:
    """A public channel's key from anything a user may type; ValueError when it is not a username."""
    name = channel_name(text)
    if not is_username(name):
        raise ValueError(f"not a public channel username: {text!r}")
    return name


def channel_key(chat_id: int, username: str | None) -> str:
    """The key of a channel as the Bot API describes it (id and optional username)."""
    if username:
        return username.lower()
    s = str(chat_id)
    return "c:" + (s[4:] if s.startswith("-100") else s.lstrip("-"))


def is_private(key: str) -> bool:
    return key.startswith("c:")


def permalink(key: str, message_id: int) -> str:
    """The t.me link of one post; private channels get the members-only ``t.me/c/…`` form."""
    if is_private(key):
        return f"https://t.me/c/{key[2:]}/{message_id}"
    return f"https://t.me/{key}/{message_id}"


def channel_link(key: str) -> str:
    """The channel as HTML for a message: a link for public channels, plain text for private ones."""
    if is_private(key):
        return html.escape(f"private channel {key[2:]}")
    return f'<a href="https://t.me/{html.escape(key)}">@{html.escape(key)}</a>'


def parse_post_link(ref: str) -> tuple[str, int] | None:
    """``https://t.me/name/45``, ``t.me/s/name/45`` or ``t.me/c/123/45`` → (key, message id); None otherwise."""
    m = _POST_LINK.match(ref.strip())
    if m is None:
        return None
    name, mid = m["name"], int(m["mid"])
    if m["private"]:
        return (f"c:{name}", mid) if name.isdigit() else None
    return (name.lower(), mid) if is_username(name.lower()) else None


def chat_reference(target: int | str) -> int | str:
    """Where to post (``[digest] publish_to``, ``/publish``): a numeric chat id, or ``@username``."""
    if isinstance(target, int):
        return target
    text = str(target).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return "@" + channel_name(text)
