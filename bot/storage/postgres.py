"""``PostgresStorage``: the same ``Storage`` API on PostgreSQL, for a newsroom that outgrows one machine.

Every query of ``Storage`` is shared; this class changes only what differs between the engines:

* the connection (an asyncpg pool, ``pg_connection``) and the migrations (``pg_schema``,
  the same list by name; all run in one transaction under an advisory lock, so a bot and
  workers starting together never migrate twice);
* full-text search: a stored ``tsvector`` over the post's lemmas (weight A) and filter tokens
  (weight D) instead of FTS5, queried with ``to_tsquery`` built from quoted terms (user
  input is never tsquery syntax) and ranked with ``ts_rank_cd``. The lemmas are folded and
  split exactly as FTS5's ``unicode61 remove_diacritics 2`` tokenizer does (``pg_terms``),
  so both engines match the same words;
* the work queue: ``FOR UPDATE SKIP LOCKED`` claims and ``LISTEN``/``NOTIFY`` wake-ups
  (``notify``, ``listen``), so workers and the bot react at once instead of polling;
* a few functions (JSON, dates, sizes on disk).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import numpy as np

from bot.domain import IncomingPost
from bot.storage.connection import Connection
from bot.storage.database import Storage
from bot.storage.fts import REPOST_TOKEN
from bot.storage.pg_connection import PgConnection, to_dollar
from bot.storage.pg_schema import PG_MIGRATIONS
from bot.storage.records import IngestResult, SearchQuery
from bot.storage.terms import fold_token, text_terms
from bot.vector_index import FetchVectors

log = logging.getLogger(__name__)

_NOT_ALNUM = re.compile(r"[\W_]+")
MIGRATION_LOCK = 0x61707077  # pg_advisory_xact_lock key: one process migrates at a time
CHANNEL_NEW = "appealwatch_new"  # posts stored that need classifying (workers listen)
CHANNEL_CLASSIFIED = "appealwatch_classified"  # payload: classified post ids, comma-separated (the bot listens)


def pg_terms(terms: str) -> str:
    """Lemmas as FTS5's tokenizer sees them: lower case, diacritics gone (й→и), split at non-alphanumerics."""
    return _NOT_ALNUM.sub(" ", fold_token(terms)).strip()


MAX_LEXEME = 2046  # PostgreSQL leaves longer words out of a tsvector (and out of a tsquery, which then matches more)
NOTHING = "'nothing':B"  # no lexeme is ever stored with weight B: a word that cannot match makes its group match nothing


def _lexemes(term: str, weight: str) -> str:
    """One term as tsquery: a phrase of its pieces (``п'ять`` → ``'п':A <-> 'ять':A``), '' if it has none."""
    pieces = [f"'{p}':{weight}" for p in pg_terms(term).split() if len(p.encode()) <= MAX_LEXEME]
    if not pieces:
        return ""
    return pieces[0] if len(pieces) == 1 else "(" + " <-> ".join(pieces) + ")"


def _any(terms: Iterable[str], weight: str) -> str:
    parts = list(dict.fromkeys(filter(None, (_lexemes(t, weight) for t in terms))))
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def redact(url: str) -> str:
    """A libpq URL without its password (in the user part or the query), for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password)=[^&]*", r"\1\2=***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # by hand: urlunsplit drops the empty host of postgresql:///db
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


class PostgresStorage(Storage):
    """``Storage`` over an asyncpg pool (``[storage] url = "postgresql://…"``)."""

    _FTS_RANKED = ("SELECT id, -10 * ts_rank_cd('{{0,0,0,1}}', search_tsv, qq, 1) AS r FROM posts, "
                   "to_tsquery('simple', ?) AS qq WHERE search_tsv @@ qq ORDER BY id DESC LIMIT {window}")
    _FTS_IDS = "SELECT id FROM posts WHERE search_tsv @@ to_tsquery('simple', ?) ORDER BY id DESC LIMIT {window}"
    _FTS_COND = "p.search_tsv @@ to_tsquery('simple', ?)"
    _AND = " & "
    _JOIN_FIRST = "JOIN"
    _EDIT_ORDER = "id"
    _EDITS_JSON = ("(SELECT COALESCE(json_agg(json_build_object('text', e.text, 'edit_date', e.edit_date, "
                   "'seen_at', e.seen_at) ORDER BY e.id), '[]')::text FROM post_edits e WHERE e.post_id=p.id)")
    _LABELS_EACH = ", jsonb_array_elements_text(cl.labels::jsonb) AS j(value)"
    _DAY = "to_char(to_timestamp(p.date) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    transient_errors: tuple[type[Exception], ...] = (
        asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.SerializationError, asyncpg.exceptions.CannotConnectNowError, ConnectionError, OSError,
        TimeoutError)

    def __init__(self, url: str, *, channels_need_approval: bool = False, pool_size: int = 10) -> None:
        super().__init__(None, channels_need_approval=channels_need_approval)
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pg: PgConnection | None = None
        self._listener: asyncpg.Connection | None = None
        self._listeners: dict[str, Callable[[str], None]] = {}
        self._relisten: asyncio.Task[None] | None = None
        self._vectors: VectorFetcher | None = None

    @property
    def db(self) -> Connection:
        if self._pg is None:
            raise RuntimeError("Storage.open() was not called")
        return self._pg

    @property
    def backend(self) -> str:
        return "postgresql"

    def describe(self) -> str:
        return redact(self.url)

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size)
        self._pg = PgConnection(self._pool)
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
            await asyncio.gather(self._relisten, return_exceptions=True)
            self._relisten = None
        self._listeners.clear()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = self._pg = None

    async def migrate(self) -> list[str]:
        if self._pg is None:
            raise RuntimeError("Storage.open() was not called")
        db = self._pg
        applied: list[str] = []
        async with db.transaction():  # PostgreSQL's DDL is transactional: all of it, or none
            await db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            await db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            done = {r[0] for r in await db.execute_fetchall("SELECT name FROM _migrations")}
            for name, fn in PG_MIGRATIONS:
                if name not in done:
                    await fn(db)
                    await db.execute("INSERT INTO _migrations VALUES (?, extract(epoch from now())::bigint)", (name,))
                    applied.append(name)
        return applied

    # -- the dialect ---------------------------------------------------------------------------

    def _terms(self, text: str) -> str:
        return pg_terms(text_terms(text))

    async def _after_bulk_load(self) -> None:
        await self.db.execute("ANALYZE posts")

    @staticmethod
    def _words_expr(groups: Sequence[Sequence[str]]) -> str:
        return " & ".join(_any(g, "A") or NOTHING for g in groups)

    @staticmethod
    def _any_word_expr(terms: Sequence[str]) -> str:
        return _any(terms, "A") or NOTHING

    @staticmethod
    def _without_reposts(body: str) -> str:
        return f"({body}) & !'{REPOST_TOKEN}':D"

    @staticmethod
    def _filter_expr(q: SearchQuery, months: list[str] | None) -> str:
        parts = []
        if q.lang:
            parts.append(_any(["lg" + q.lang], "D"))
        if q.labels:
            parts.append(_any([f"lb{lbl}" for lbl in q.labels], "D"))
        if q.channel:
            parts.append(_any(["ch" + q.channel.encode().hex()], "D"))
        if q.appeals_only:
            parts.append("'isappeal':D")
        if months:
            parts.append(_any(months, "D"))
        return " & ".join(filter(None, parts))

    async def _doc_counts(self, terms: set[str], cap: int) -> dict[str, int]:
        """Counted from the GIN index, stopping past ``cap``: PostgreSQL keeps no vocabulary table."""
        counts: dict[str, int] = {}
        for term in terms:
            expr = _lexemes(term, "A")
            if not expr:
                counts[term] = 0
                continue
            found = await self._rows("SELECT COUNT(*) FROM (SELECT 1 FROM posts WHERE search_tsv @@ "
                                     "to_tsquery('simple', ?) LIMIT ?) AS t", (expr, cap + 1))
            counts[term] = int(found[0][0])
        return counts

    async def storage_bytes(self) -> dict[str, int]:
        rows = await self._rows(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'")
        return {str(r[0]): int(r[1]) for r in rows}

    def export_rows_blocking(self, q: SearchQuery, *, limit: int | None = None,
                             chunk: int = 1000) -> Generator[dict[str, Any], None, None]:
        """``export_rows`` for a worker thread: its own connection and event loop, so the bot's loop never waits."""
        where, base_args = self._export_filter(q)
        sql = to_dollar(self._export_select(where))
        loop = asyncio.new_event_loop()
        conn: asyncpg.Connection = loop.run_until_complete(asyncpg.connect(self.url))
        try:
            last, n = 0, 0
            while limit is None or n < limit:
                size = chunk if limit is None else min(chunk, limit - n)
                rows = loop.run_until_complete(conn.fetch(sql, last, *base_args, size))
                if not rows:
                    return
                for r in rows:
                    yield self._export_row(r)
                n += len(rows)
                last = int(rows[-1]["id"])
        finally:
            loop.run_until_complete(conn.close())
            loop.close()

    def vector_fetcher(self) -> FetchVectors:
        if self._vectors is None:
            self._vectors = VectorFetcher(self.url)
        return self._vectors.fetch

    # -- wake-ups between processes -------------------------------------------------------------

    async def notify(self, channel: str, payload: str = "") -> None:
        """``NOTIFY`` (delivered when the surrounding transaction, if any, commits)."""
        await self.db.execute("SELECT pg_notify(?, ?)", (channel, payload))

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` on every notification of ``channel``, over one dedicated connection.

        If that connection is lost (the server restarted), it is opened again and every channel
        listened to again, and each callback gets an empty payload: what was notified meanwhile
        is lost, so listeners look for work themselves then (workers claim; the bot's sweep).
        """
        self._listeners[channel] = callback
        if self._listener is None or self._listener.is_closed():
            await self._connect_listener()
        else:
            await self._listener.add_listener(channel, self._on_notify)

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        callback = self._listeners.get(channel)
        if callback is not None:
            callback(payload)

    async def _connect_listener(self) -> None:
        conn = await asyncpg.connect(self.url)
        conn.add_termination_listener(self._on_listener_lost)
        for channel in self._listeners:
            await conn.add_listener(channel, self._on_notify)
        self._listener = conn

    def _on_listener_lost(self, _conn: object) -> None:
        if self._listeners and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.get_running_loop().create_task(self._reconnect_listener(), name="pg-relisten")

    async def _reconnect_listener(self) -> None:
        delay = 0.5
        while self._listeners:
            try:
                await self._connect_listener()
            except self.transient_errors as exc:
                log.warning("LISTEN connection lost; reconnecting in %.0f s (%s)", delay, exc)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            log.info("LISTEN connection restored (%s)", ", ".join(self._listeners))
            for callback in list(self._listeners.values()):
                callback("")  # notifications sent while it was down are gone: look for work now
            return

    async def store_posts(self, posts: Sequence[IncomingPost]) -> list[IngestResult]:
        results = await super().store_posts(posts)
        if any(r.is_new or r.edited for r in results):
            await self.notify(CHANNEL_NEW)  # workers wake now, not at their next poll
        return results



class VectorFetcher:
    """``fetch_vectors`` for PostgreSQL: float16 embeddings by post id, callable from any thread.

    The vector index calls it synchronously (from the search's worker thread; ``vector_of``
    sometimes on the event loop), so it owns a private event loop on its own thread, with one
    connection; ``close`` (from ``PostgresStorage.close``) ends both.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-vectors", daemon=True)
        self._thread.start()
        self._conn: asyncpg.Connection | None = None

    async def _fetch(self, ids: list[int]) -> dict[int, np.ndarray]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.url)
        rows = await self._conn.fetch("SELECT post_id, embedding FROM classifications WHERE post_id = ANY($1::bigint[])", ids)
        return {int(r[0]): np.frombuffer(r[1], dtype=np.float16).astype(np.float32) for r in rows if r[1] is not None}

    def fetch(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not ids:
            return {}
        return asyncio.run_coroutine_threadsafe(self._fetch([int(i) for i in ids]), self._loop).result(timeout=30)

    def close(self) -> None:
        async def shut() -> None:
            if self._conn is not None:
                await self._conn.close()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()
