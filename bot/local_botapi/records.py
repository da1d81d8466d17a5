"""The records of :class:`~bot.local_botapi.LocalBotAPI`: calls, files, faults and the error it answers.

:class:`Call` and :class:`Fault` are what tests inspect and inject; :class:`ApiError` is
raised inside method handlers and becomes an ``{"ok": false}`` reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One multipart file part of a request, kept byte for byte so tests can inspect it."""

    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class StoredFile:
    """A file the server knows by ``file_id``: uploaded, or made up for an injected update.

    ``media`` is the object Telegram would put in a message for it (a list of photo sizes,
    or a document / video / … dict), reused when the bot re-sends the file by id.
    ``data`` is ``None`` for files the server never received bytes for.
    """

    file_id: str
    file_unique_id: str
    kind: str
    data: bytes | None
    filename: str | None
    content_type: str | None
    size: int
    file_path: str
    media: Any = None


@dataclass(slots=True)
class Call:
    """One Bot API request as the server received and answered it.

    ``params`` are decoded (JSON fields parsed, numeric ``chat_id`` an int); ``files`` are
    the multipart uploads by part name. ``result`` is what ``"result"`` held in a successful
    reply (a Message dict for a send, so a test can :meth:`LocalBotAPI.press_button` on
    it); ``error_code`` / ``description`` are set when the call was refused, whether by
    an injected fault or by validation. ``time`` is when the request arrived (the call is
    appended to :attr:`LocalBotAPI.calls` when it is answered).
    """

    method: str
    params: JSONDict
    files: dict[str, UploadedFile] = field(default_factory=dict)
    time: float = 0.0
    token: str = ""
    result: Any = None
    error_code: int | None = None
    description: str | None = None
    retry_after: int | None = None
    resolved_chat_id: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the server answered ``{"ok": true}``."""
        return self.error_code is None

    @property
    def chat_id(self) -> int | str | None:
        """The target chat: resolved to its numeric id when the server could resolve it."""
        if self.resolved_chat_id is not None:
            return self.resolved_chat_id
        value = self.params.get("chat_id")
        return value if isinstance(value, int | str) else None

    @property
    def text(self) -> str | None:
        """``text`` or ``caption`` exactly as the bot sent it (markup included)."""
        value = self.params.get("text", self.params.get("caption"))
        return value if isinstance(value, str) else None

    @property
    def shown_text(self) -> str | None:
        """The text or caption as a user sees it: after ``parse_mode`` was applied."""
        result = self.result
        if isinstance(result, list) and result and isinstance(result[0], dict):
            result = result[0]
        if isinstance(result, dict):
            value = result.get("text", result.get("caption"))
            if isinstance(value, str):
                return value
        return self.text

    @property
    def buttons(self) -> list[list[JSONDict]]:
        """The inline keyboard sent with the call (``[]`` when none)."""
        markup = self.params.get("reply_markup")
        if isinstance(markup, dict) and isinstance(markup.get("inline_keyboard"), list):
            return markup["inline_keyboard"]
        return []

    def describe(self, width: int = 120) -> str:
        """A one-line summary for transcripts and timeout messages."""
        parts = [self.method]
        if self.chat_id is not None:
            parts.append(f"chat={self.chat_id}")
        if self.error_code is not None:
            parts.append(f"-> {self.error_code} {self.description}")
        text = self.shown_text
        if text is not None:
            parts.append(repr(text))
        labels = [str(b.get("text")) for row in self.buttons for b in row if isinstance(b, dict)]
        if labels:
            parts.append("[" + " | ".join(labels) + "]")
        line = " ".join(parts)
        return line if len(line) <= width else line[: width - 1] + "…"


@dataclass(slots=True)
class Fault:
    """An error the server answers instead of running a method.

    ``remaining`` counts down per faulted call; ``None`` means forever (a blocked user).
    ``share`` is the chance that a matching call is faulted (1.0: every one; drawn from the
    server's seeded random generator, so a run is repeatable). ``stall`` holds the answer that
    many seconds first: a client whose read timeout is shorter sees a timeout.
    """

    method: str
    error_code: int
    description: str
    remaining: int | None = 1
    retry_after: int | None = None
    chat_id: int | str | None = None
    share: float = 1.0
    stall: float = 0.0

    def matches(self, method: str, chat_id: int | str | None) -> bool:
        """Whether this fault applies to a call of ``method`` aimed at ``chat_id``."""
        if self.method != method and self.method != "*":
            return False
        return self.chat_id is None or self.chat_id == chat_id


class ApiError(Exception):
    """Raised inside method handlers; becomes an ``{"ok": false}`` reply."""

    def __init__(self, error_code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after


def bad_request(text: str) -> ApiError:
    return ApiError(400, f"Bad Request: {text}")
