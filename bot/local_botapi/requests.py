"""Decoding of Bot API requests: query, urlencoded, multipart (with file parts) or JSON.

python-telegram-bot sends form bodies in which every non-string value is JSON-encoded;
this undoes that for the keys known to hold JSON, ints or booleans, and keeps uploaded
files byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import BodyPartReader, web

from .records import JSONDict, UploadedFile

# In form bodies PTB JSON-encodes every non-string value; these keys hold JSON.
_JSON_KEYS: Final[frozenset[str]] = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "commands",
        "allowed_updates",
        "link_preview_options",
        "reply_parameters",
        "media",
        "scope",
        "menu_button",
        "message_ids",
        "results",
        "permissions",
        "rights",
        "reaction",
        "explanation_entities",
        "options",
        "prices",
    }
)
_INT_KEYS: Final[frozenset[str]] = frozenset(
    {
        "chat_id",
        "from_chat_id",
        "message_id",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "message_thread_id",
        "reply_to_message_id",
        "cache_time",
        "until_date",
        "duration",
        "width",
        "height",
    }
)
_BOOL_KEYS: Final[frozenset[str]] = frozenset(
    {
        "disable_notification",
        "protect_content",
        "show_alert",
        "drop_pending_updates",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "disable_content_type_detection",
        "has_spoiler",
        "show_caption_above_media",
        "allow_paid_broadcast",
        "remove_caption",
        "only_if_banned",
        "revoke_messages",
        "is_big",
    }
)
_NUMERIC_RE: Final = re.compile(r"-?\d+")


def _normalize_params(raw: Mapping[str, Any]) -> JSONDict:
    """Undo PTB's form encoding: JSON fields parsed, ids as ints, booleans as bools.

    Only known keys are converted so that a text such as ``"123"`` or ``"true"`` stays a
    string.
    """
    params: JSONDict = {}
    for key, value in raw.items():
        if isinstance(value, str):
            if key in _JSON_KEYS:
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            elif key in _INT_KEYS and _NUMERIC_RE.fullmatch(value):
                value = int(value)
            elif key in _BOOL_KEYS and value in ("true", "false", "True", "False"):
                value = value.lower() == "true"
        params[key] = value
    return params


async def read_request(request: web.Request) -> tuple[JSONDict, dict[str, UploadedFile]]:
    """Collect query, urlencoded, multipart or JSON parameters into one dict."""
    raw: JSONDict = dict(request.query)
    files: dict[str, UploadedFile] = {}
    if request.method == "POST" and request.can_read_body:
        content_type = request.content_type
        if content_type == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("JSON body must be an object")
            raw.update(body)
        elif content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                data = bytes(await part.read(decode=True))
                if part.filename:
                    part_type = part.headers.get("Content-Type", "application/octet-stream")
                    files[part.name] = UploadedFile(part.filename, part_type, data)
                else:
                    raw[part.name] = data.decode(part.get_charset("utf-8"))
        else:
            raw.update(await request.post())
    return _normalize_params(raw), files


def coerce_chat_id(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value) if _NUMERIC_RE.fullmatch(value) else value
    return None
