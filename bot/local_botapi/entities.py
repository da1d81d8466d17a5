"""Telegram's text formatting (``parse_mode``): HTML, Markdown and MarkdownV2 to entities.

As strict as Telegram, so that the bot's escaping is tested: what Telegram would refuse
raises a 400 :class:`~bot.local_botapi.records.ApiError` with Telegram's wording. Entity
offsets and lengths are in UTF-16 code units, as Telegram counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from .records import ApiError, JSONDict, bad_request


def utf16_len(text: str) -> int:
    """Telegram measures entity offsets and lengths in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(source: str, index: int) -> int:
    return len(source[:index].encode("utf-8"))


def _parse_error(text: str) -> ApiError:
    return bad_request(f"can't parse entities: {text}")


_HTML_TAGS: Final[dict[str, str]] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG_RE: Final = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^>]*)?)\s*/?>")
_ATTR_RE: Final = re.compile(r"""([a-zA-Z-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_HTML_ENTITY_RE: Final = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);")
_NAMED_ENTITIES: Final[dict[str, str]] = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


@dataclass(slots=True)
class _Open:
    tag: str
    start: int
    byte: int
    entity: JSONDict | None


class _TextBuilder:
    """Accumulates plain text while tracking its UTF-16 length for entity offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[JSONDict] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += utf16_len(text)

    def close(self, opened: _Open) -> None:
        if opened.entity is not None and self.pos > opened.start:
            self.entities.append({**opened.entity, "offset": opened.start, "length": self.pos - opened.start})

    def result(self) -> tuple[str, list[JSONDict]]:
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), entities


def _decode_html_entity(name: str) -> str | None:
    if name.startswith(("#x", "#X")):
        code = int(name[2:], 16)
    elif name.startswith("#"):
        code = int(name[1:])
    else:
        return _NAMED_ENTITIES.get(name)
    return chr(code) if 0 < code <= 0x10FFFF else None


def _parse_html(source: str) -> tuple[str, list[JSONDict]]:
    """Telegram's ``parse_mode=HTML``: the supported tags only, ``<`` must be escaped."""
    out = _TextBuilder()
    stack: list[_Open] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "<":
            match = _TAG_RE.match(source, i)
            if match is None:
                guess = re.match(r"</?([^\s>]*)", source[i:])
                name = guess.group(1) if guess else ""
                raise _parse_error(f'Unsupported start tag "{name}" at byte offset {_byte_offset(source, i)}')
            closing, name, rest = match.group(1), match.group(2).lower(), match.group(3)
            if closing:
                if not stack or stack[-1].tag != name:
                    raise _parse_error(f"Unexpected end tag at byte offset {_byte_offset(source, i)}")
                out.close(stack.pop())
            else:
                stack.append(_open_html_tag(source, i, name, rest, out.pos, stack))
            i = match.end()
            continue
        if ch == "&":
            match = _HTML_ENTITY_RE.match(source, i)
            decoded = _decode_html_entity(match.group(1)) if match else None
            if match is not None and decoded is not None:
                out.add(decoded)
                i = match.end()
                continue
        out.add(ch)
        i += 1
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    return out.result()


def _open_html_tag(source: str, index: int, name: str, rest: str, pos: int, stack: list[_Open]) -> _Open:
    kind = _HTML_TAGS.get(name)
    if kind is None:
        raise _parse_error(f'Unsupported start tag "{name}" at byte offset {_byte_offset(source, index)}')
    attrs = {m.group(1).lower(): m.group(2) or m.group(3) or m.group(4) or "" for m in _ATTR_RE.finditer(rest)}
    entity: JSONDict | None = {"type": kind}
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise _parse_error(f'Unsupported start tag "span" at byte offset {_byte_offset(source, index)}')
    if name == "a":
        href = attrs.get("href", "")
        entity = {"type": "text_link", "url": href} if href else None
    elif name == "tg-emoji":
        emoji_id = attrs.get("emoji-id")
        if not emoji_id:
            raise _parse_error(
                f"Custom emoji entity must contain a tg://emoji URL at byte offset {_byte_offset(source, index)}"
            )
        entity = {"type": "custom_emoji", "custom_emoji_id": emoji_id}
    elif name == "blockquote" and "expandable" in attrs:
        entity = {"type": "expandable_blockquote"}
    elif name == "code" and stack and stack[-1].tag == "pre" and stack[-1].entity is not None:
        language = attrs.get("class", "")
        if language.startswith("language-"):
            stack[-1].entity["language"] = language.removeprefix("language-")
            entity = None
    return _Open(tag=name, start=pos, byte=_byte_offset(source, index), entity=entity)


_MDV2_RESERVED: Final = frozenset("_*[]()~`>#+-=|{}.!")


def _find_closing(source: str, start: int, closer: str, v2: bool) -> tuple[str, int] | None:
    """Scan ``source`` from ``start`` to ``closer``; in V2, ``\\`` escapes inside code/URLs."""
    chunk: list[str] = []
    i = start
    while i < len(source):
        if v2 and source[i] == "\\" and i + 1 < len(source):
            chunk.append(source[i + 1])
            i += 2
            continue
        if source.startswith(closer, i):
            return "".join(chunk), i + len(closer)
        chunk.append(source[i])
        i += 1
    return None


def _parse_markdown(source: str, v2: bool) -> tuple[str, list[JSONDict]]:
    """Telegram's ``Markdown`` (legacy) and ``MarkdownV2``, reserved characters included."""
    out = _TextBuilder()
    stack: list[_Open] = []
    quote: _Open | None = None
    i = 0

    def unclosed(byte: int) -> ApiError:
        return _parse_error(f"Can't find end of the entity starting at byte offset {byte}")

    while i < len(source):
        ch = source[i]
        byte = _byte_offset(source, i)
        if ch == "\\" and i + 1 < len(source) and ((v2 and 0 < ord(source[i + 1]) < 127) or source[i + 1] in "_*`["):
            out.add(source[i + 1])
            i += 2
            continue
        if ch == "`":
            if source.startswith("```", i):
                found = _find_closing(source, i + 3, "```", v2)
                if found is None:
                    raise unclosed(byte)
                body, i = found
                language = ""
                first, newline, remainder = body.partition("\n")
                if newline and first and not any(c.isspace() for c in first):
                    language, body = first, remainder
                start = out.pos
                out.add(body)
                pre: JSONDict = {"type": "pre", "offset": start, "length": out.pos - start}
                if language:
                    pre["language"] = language
                if out.pos > start:
                    out.entities.append(pre)
                continue
            found = _find_closing(source, i + 1, "`", v2)
            if found is None:
                raise unclosed(byte)
            body, i = found
            start = out.pos
            out.add(body)
            out.close(_Open("code", start, byte, {"type": "code"}))
            continue
        if ch == "[":
            stack.append(_Open("link", out.pos, byte, None))
            i += 1
            continue
        if ch == "]" and stack and stack[-1].tag == "link":
            if not source.startswith("(", i + 1):
                if v2:
                    raise _parse_error("Character ']' is reserved and must be escaped with the preceding '\\'")
                raise unclosed(stack[-1].byte)
            found = _find_closing(source, i + 2, ")", v2)
            if found is None:
                raise unclosed(stack[-1].byte)
            url, i = found
            opened = stack.pop()
            opened.entity = {"type": "text_link", "url": url}
            out.close(opened)
            continue
        marker: str | None = None
        if ch == "*":
            marker = "bold"
        elif ch == "_":
            marker = "underline" if v2 and source.startswith("__", i) else "italic"
        elif v2 and ch == "~":
            marker = "strikethrough"
        elif v2 and source.startswith("||", i):
            marker = "spoiler"
        if marker is not None:
            i += 2 if marker in ("underline", "spoiler") else 1
            if stack and stack[-1].tag == marker:
                out.close(stack.pop())
            elif any(o.tag == marker for o in stack) or (not v2 and stack):
                raise unclosed(stack[-1].byte)
            else:
                stack.append(_Open(marker, out.pos, byte, {"type": marker}))
            continue
        if v2 and ch == ">" and (i == 0 or source[i - 1] == "\n"):
            if quote is None:
                quote = _Open("blockquote", out.pos, byte, {"type": "blockquote"})
            i += 1
            continue
        if v2 and ch in _MDV2_RESERVED:
            raise _parse_error(f"Character '{ch}' is reserved and must be escaped with the preceding '\\'")
        if ch == "\n" and quote is not None and not source.startswith(">", i + 1):
            out.close(quote)
            quote = None
        out.add(ch)
        i += 1
    if stack:
        raise unclosed(stack[-1].byte)
    if quote is not None:
        out.close(quote)
    return out.result()


def format_text(text: str, parse_mode: Any, entities: Any) -> tuple[str, list[JSONDict]]:
    """Apply ``parse_mode`` (or explicit ``entities``) the way Telegram does."""
    if isinstance(entities, list):
        return text, [e for e in entities if isinstance(e, dict)]
    mode = parse_mode.lower() if isinstance(parse_mode, str) else ""
    if mode == "html":
        return _parse_html(text)
    if mode in ("markdown", "markdownv2"):
        return _parse_markdown(text, v2=mode == "markdownv2")
    if mode:
        raise bad_request(f"unsupported parse_mode {parse_mode!r}")
    return text, []
