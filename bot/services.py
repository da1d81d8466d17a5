"""The services one running bot shares: built once in ``bot.app``, reached via ``BotContext``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bot.alerts import AlertDispatcher
from bot.config import Config
from bot.pipeline import Pipeline, Scorer
from bot.search import VectorIndex
from bot.sources.webpreview import WebPreviewSource
from bot.storage import SearchQuery, Storage


class Model(Scorer, Protocol):
    """What the running bot needs from ``models.classifier.AppealClassifier``: scores and embeddings."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(slots=True)
class Services:
    config: Config
    storage: Storage
    pipeline: Pipeline
    alerts: AlertDispatcher
    classifier: Model
    vectors: VectorIndex | None = None
    web_source: WebPreviewSource | None = None
    search_sessions: dict[str, SearchQuery] = field(default_factory=dict)  # /search pages, by button token
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    def embed_query(self, text: str) -> np.ndarray:
        """One search query's embedding (runs on a worker thread)."""
        return np.asarray(self.classifier.embed([text])[0], dtype=np.float32)
