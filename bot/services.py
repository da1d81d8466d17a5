"""The services one running bot shares: built once in ``bot.app``, reached via ``BotContext``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bot.access import PerUserInterval, SeenOnce
from bot.alerts import AlertDispatcher
from bot.config import Config
from bot.pipeline import Pipeline, Scorer
from bot.recovery import DowntimeReport
from bot.sources.webpreview import WebPreviewSource
from bot.storage import SearchQuery, Storage
from bot.vector_index import VectorIndex


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
    # /search pages, by button token: the chat that ran the search, and the query
    search_sessions: dict[str, tuple[int, SearchQuery]] = field(default_factory=dict)
    exports: PerUserInterval = field(default_factory=PerUserInterval)  # /export's per-user rate limit
    refused: SeenOnce = field(default_factory=SeenOnce)  # strangers a private instance has refused once
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    downtime: DowntimeReport | None = None  # the one summary owed to the admins after downtime

    @property
    def alert_floor(self) -> float:
        """The lowest score an alert can have: ``[alerts] min_score`` or the model's own threshold, whichever
        is higher (a post under the threshold is no appeal at all), so /subscribe never promises alerts at
        scores that cannot occur."""
        return max(self.config.alerts.min_score, float(getattr(self.classifier, "threshold", 0.0) or 0.0))

    def embed_query(self, text: str) -> np.ndarray:
        """One search query's embedding, in the index's language-neutral space when the model has one
        (``models.search_space``; runs on a worker thread)."""
        embed_query = getattr(self.classifier, "embed_query", None)
        if embed_query is not None:
            return np.asarray(embed_query(text), dtype=np.float32)
        return self.embed_post(text)

    def embed_post(self, text: str) -> np.ndarray:
        """A post's raw search embedding, as stored (``/similar`` for a post that has none yet)."""
        return np.asarray(self.classifier.embed([text])[0], dtype=np.float32)
