"""The services one running bot shares: built once in ``bot.app``, reached via ``BotContext``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bot.alerts import AlertDispatcher
from bot.config import Config
from bot.pipeline import Pipeline
from bot.search import VectorIndex
from bot.storage import Storage


@dataclass(slots=True)
class Services:
    config: Config
    storage: Storage
    pipeline: Pipeline
    alerts: AlertDispatcher
    classifier: Any
    vectors: VectorIndex | None = None
    web_source: Any = None
    search_sessions: dict[str, Any] = field(default_factory=dict)
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    def embed_query(self, text: str) -> Any:
        """One search query's embedding (runs on a worker thread)."""
        return self.classifier.embed([text])[0]
