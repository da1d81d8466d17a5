"""``Storage``: every SQL statement the bot runs, over one aiosqlite connection."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np

from bot.channels import permalink
from bot.domain import ChannelHealth, Filters, IncomingPost, StoredPost
from bot.storage.connection import Connection, Row
from bot.storage.fingerprint import content_hash
from bot.storage.fts import REPOST_TOKEN, any_of, meta_tokens, month_tokens, quote, reclassified_meta
from bot.storage.guard import GuardedConnection
from bot.storage.records import (
    ArchivedPost,
    ChannelAccess,
    ChatSettings,
    FailedPost,
    IngestResult,
    SearchQuery,
    SearchRanking,
    VectorRow,
)
from bot.storage.schema import MIGRATIONS
from bot.storage.terms import fold_token, highlight_snippet, query_terms, text_terms
from bot.vector_index import FetchVectors, VectorMeta, sqlite_vector_fetcher
from models.taxonomy import Classification


def _ts(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _ts_end(dt: datetime) -> int:
    """An exclusive period end in whole seconds, rounded up: a post from the last second counts."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return math.ceil(dt.timestamp())


def _iso(ts: int | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _dt(ts: int | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class Storage:
    """All database access, in SQL that SQLite (3.35+) and PostgreSQL both accept.

    This class is the SQLite engine (one aiosqlite connection on its own thread, writes
    serialised by ``guard``); ``postgres.PostgresStorage`` swaps the connection and the few
    dialect hooks below (full-text syntax, JSON and date functions, row locking)."""

    def __init__(self, path: Path | None, *, channels_need_approval: bool = False) -> None:
        # the SQLite file (None for PostgresStorage, whose data lives behind a URL)
        self.path = Path(path) if path is not None else None
        # True when [access] admins exist: a channel first seen through the bot (it added the bot,
        # or a user forwarded its post) is 'pending' until an admin approves it. Web-preview and
        # imported channels are chosen by admins and the operator: always approved.
        self.channels_need_approval = channels_need_approval
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by concurrent handlers: transactions must not interleave, and a
        # single write must never land inside another coroutine's transaction (see storage.guard).
        self._tx_lock = asyncio.Lock()
        self._guarded: GuardedConnection | None = None

    @property
    def db(self) -> Connection:
        """The connection (SQLite: every write through it takes the transaction lock)."""
        if self._guarded is None:
            raise RuntimeError("Storage.open() was not called")
        return self._guarded

    # errors worth trying again (a busy database file); PostgresStorage adds lost connections and deadlocks
    transient_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql": for what only one engine has (the vector fetcher, LISTEN/NOTIFY)."""
        return "sqlite"

    def describe(self) -> str:
        """Where the data lives, for logs and /status (never a password)."""
        return str(self.path)

    @property
    def sqlite_path(self) -> Path:
        if self.path is None:
            raise RuntimeError("this storage is not an SQLite file")
        return self.path

    async def open(self) -> None:
        self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.sqlite_path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.execute("PRAGMA busy_timeout=5000")
        self._guarded = GuardedConnection(self._db, self._tx_lock)
        await self.migrate()

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return list(await self.db.execute_fetchall(sql, tuple(args)))

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = self._guarded = None

    async def migrate(self) -> list[str]:
        if self._guarded is None:
            raise RuntimeError("Storage.open() was not called")
        db = self._guarded
        await db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
        done = {r[0] for r in await self._rows("SELECT name FROM _migrations")}
        applied = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            async with db.transaction():
                await fn(db.raw)
                await db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, int(time.time())))
            applied.append(name)
        return applied

    async def _tx(self, statements: Callable[[], Awaitable[Any]]) -> Any:
        async with self.db.transaction():
            return await statements()

    # -- channels ---------------------------------------------------------------------------

    async def ensure_channel(self, key: str, *, chat_id: int | None = None, title: str | None = None,
                             source: str = "bot", watched: bool | None = None, added_by: int | None = None,
                             approval: str | None = None, approved_from: datetime | None = None) -> int:
        """Create or update a channel. ``approval`` ('approved', 'pending', 'rejected') is set when given;
        a new channel otherwise gets the default (see ``channels_need_approval``). A channel approved now
        alerts posts first seen from ``approved_from`` on (default: now)."""
        now = int(time.time())
        default = "pending" if self.channels_need_approval and source in ("bot", "forward") else "approved"
        await self.db.execute(
            "INSERT INTO channels(key, chat_id, title, source, watched, added_by, added_at, approval) "
            "VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET chat_id=COALESCE(excluded.chat_id, channels.chat_id), "
            "title=COALESCE(excluded.title, channels.title)",
            (key, chat_id, title, source, int(bool(watched)), added_by, now, approval or default),
        )
        if watched is not None:
            await self.db.execute("UPDATE channels SET watched=?, source=? WHERE key=?", (int(watched), source, key))
        if approval is not None:
            since = min(now, int(approved_from.timestamp()) - 1) if approved_from is not None else now
            await self._set_approval("key=?", key, approval, added_by, since)
        row = await self._rows("SELECT id FROM channels WHERE key=?", (key,))
        return int(row[0][0])

    async def _set_approval(self, where: str, arg: object, approval: str, by: int | None, now: int) -> None:
        if approval not in ("approved", "pending", "rejected"):
            raise ValueError(f"unknown channel approval {approval!r}")
        # a channel that becomes approved now alerts posts first seen from now on (earlier ones stay unalerted)
        await self.db.execute(
            f"UPDATE channels SET approved_at=CASE WHEN approval='approved' THEN approved_at ELSE ? END, "
            f"approved_by=CASE WHEN approval='approved' THEN approved_by ELSE ? END, approval=? WHERE {where}",
            (now, by, approval, arg))

    async def channel_access(self, *, key: str | None = None, channel_id: int | None = None) -> ChannelAccess | None:
        """A channel's approval state, by key or by row id; None if unknown."""
        where, arg = ("key=?", key) if key is not None else ("id=?", channel_id)
        if arg is None or (isinstance(arg, int) and not -(2**63) <= arg < 2**63):
            return None
        rows = await self._rows(f"SELECT id, key, chat_id, title, watched, added_by, approval, approved_by "
                                f"FROM channels WHERE {where}", (arg,))
        if not rows:
            return None
        r = rows[0]
        return ChannelAccess(id=int(r["id"]), key=str(r["key"]), chat_id=r["chat_id"], title=r["title"],
                             watched=bool(r["watched"]), added_by=r["added_by"], approval=str(r["approval"]),
                             approved_by=r["approved_by"])

    async def set_channel_approval(self, channel_id: int, approval: str, *, by: int | None) -> None:
        """An admin's decision; a rejected channel is no longer watched (its stored posts are kept)."""
        await self._set_approval("id=?", channel_id, approval, by, int(time.time()))
        if approval == "rejected":
            await self.db.execute("UPDATE channels SET watched=0 WHERE id=?", (channel_id,))

    async def alertable_posts(self, post_ids: Sequence[int]) -> list[int]:
        """The posts that may be alerted: their channel is approved and they were first seen after that
        (in whole seconds: a post seen in the second of the approval counts as stored while it waited)."""
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = await self._rows(
            f"SELECT p.id FROM posts p JOIN channels c ON c.id=p.channel_id WHERE p.id IN ({marks}) "
            "AND c.approval='approved' AND p.first_seen>COALESCE(c.approved_at, -1)", ids)
        keep = {int(r[0]) for r in rows}
        return [i for i in ids if i in keep]

    async def watched_channels(self, source: str | None = None) -> list[str]:
        sql = "SELECT key FROM channels WHERE watched=1" + (" AND source=?" if source else "") + " ORDER BY key"
        rows = await self._rows(sql, (source,) if source else ())
        return [str(r[0]) for r in rows]

    async def set_watched(self, key: str, watched: bool) -> bool:
        cur = await self.db.execute("UPDATE channels SET watched=? WHERE key=?", (int(watched), key))
        return cur.rowcount > 0

    async def last_message_id(self, channel: str) -> int | None:
        rows = await self._rows(
            "SELECT MAX(p.message_id) FROM posts p JOIN channels c ON c.id=p.channel_id WHERE c.key=?", (channel,)
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def record_fetch(self, channel: str, *, ok: bool, error: str | None = None, when: datetime | None = None) -> None:
        now = _ts(when) or int(time.time())
        cid = await self.ensure_channel(channel, source="web")
        if ok:
            await self.db.execute("UPDATE channels SET last_fetch_ok=?, unavailable_reason=NULL WHERE id=?", (now, cid))
        else:
            await self.db.execute("UPDATE channels SET last_error=? WHERE id=?", (error, cid))
            await self.db.execute("INSERT INTO fetch_errors VALUES (?,?,?)", (cid, now, error or "error"))

    async def mark_unavailable(self, channel: str, reason: str) -> bool:
        """Remember why a channel can't be read; True the first time (so the admin is told once)."""
        cid = await self.ensure_channel(channel, source="web")
        rows = await self._rows("SELECT unavailable_reason FROM channels WHERE id=?", (cid,))
        if rows and rows[0][0] == reason:
            return False
        await self.db.execute("UPDATE channels SET unavailable_reason=? WHERE id=?", (reason, cid))
        return True

    async def channel_health(self) -> list[ChannelHealth]:
        since = int(time.time()) - 86400
        rows = await self._rows(
            """SELECT c.key, c.source, c.title, c.last_fetch_ok, c.last_error, c.unavailable_reason, c.approval,
                      (SELECT MAX(date) FROM posts WHERE channel_id=c.id) AS last_date,
                      (SELECT MAX(message_id) FROM posts WHERE channel_id=c.id) AS last_id,
                      (SELECT COUNT(*) FROM posts WHERE channel_id=c.id) AS n,
                      (SELECT COUNT(*) FROM fetch_errors WHERE channel_id=c.id AND at>=?) AS errs
               FROM channels c WHERE c.watched=1 OR c.source IN ('bot','web') ORDER BY c.key""",
            (since,),
        )
        return [
            ChannelHealth(
                channel=r["key"], source=r["source"], title=r["title"], last_fetch_ok=_dt(r["last_fetch_ok"]),
                last_post_date=_dt(r["last_date"]), last_message_id=r["last_id"], errors_24h=int(r["errs"]),
                last_error=r["unavailable_reason"] or r["last_error"], posts=int(r["n"]), approval=str(r["approval"]),
            )
            for r in rows
        ]

    # -- posts --------------------------------------------------------------------------------

    async def store_post(self, post: IncomingPost) -> IngestResult:
        """Insert once; a changed text on a known post is an edit (kept in post_edits)."""
        return (await self.store_posts([post]))[0]

    async def store_posts(self, posts: Sequence[IncomingPost]) -> list[IngestResult]:
        """Store a batch in one transaction (imports write thousands of posts a second this way)."""

        async def run() -> list[IngestResult]:
            return [await self._store_one(p) for p in posts]

        results: list[IngestResult] = await self._tx(run)
        return results

    async def _store_one(self, post: IncomingPost) -> IngestResult:
        now = int(time.time())
        h = content_hash(post.text)
        cid = await self.ensure_channel(post.channel, chat_id=post.chat_id, title=post.channel_title,
                                        source=post.source)
        inserted = list(await self.db.fetch_write(
            "INSERT INTO posts(channel_id, message_id, text, has_media, date, first_seen, edit_date, views, "
            "forwarded_from, reply_to, source, content_hash, search_meta, search_terms) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(channel_id, message_id) DO NOTHING RETURNING id",
            (cid, post.message_id, post.text, int(post.has_media), _ts(post.date), now, _ts(post.edit_date),
             post.views, post.forwarded_from, post.reply_to, post.source, h,
             meta_tokens(post.channel, _ts(post.date)), self._terms(post.text)),
        ))
        if inserted:
            pid = int(inserted[0][0])
            await self.db.execute(
                "INSERT INTO post_edits(post_id, text, content_hash, edit_date, seen_at) VALUES (?,?,?,?,?)",
                (pid, post.text, h, _ts(post.edit_date), now),
            )
            return IngestResult(pid, True, False)
        rows = await self._rows(
            "SELECT id, text FROM posts WHERE channel_id=? AND message_id=?", (cid, post.message_id)
        )
        pid, old_text = int(rows[0][0]), rows[0][1]
        if post.views is not None:
            await self.db.execute("UPDATE posts SET views=? WHERE id=?", (post.views, pid))
        if old_text == post.text:
            return IngestResult(pid, False, False)
        await self.db.execute(
            "UPDATE posts SET text=?, content_hash=?, edit_date=?, state='new', search_terms=?, claimed_by=NULL, "
            "claim_until=NULL WHERE id=?",
            (post.text, h, _ts(post.edit_date) or now, self._terms(post.text), pid),
        )
        await self.db.execute(
            "INSERT INTO post_edits(post_id, text, content_hash, edit_date, seen_at) VALUES (?,?,?,?,?)",
            (pid, post.text, h, _ts(post.edit_date) or now, now),
        )
        return IngestResult(pid, False, True)

    async def load_archive(self, posts: Iterable[ArchivedPost], *, batch: int = 50_000) -> int:
        """Store classified posts in bulk, one transaction per ``batch``; existing (channel, id) pairs are kept.

        The way in for archives classified elsewhere (and the benchmarks' synthetic archives):
        the same rows ``store_post`` and ``save_classifications`` write, without a round trip each.
        """
        channel_ids: dict[str, int] = {}
        stored = 0
        pending: list[ArchivedPost] = []

        async def flush() -> None:
            nonlocal stored
            for key in {p.channel for p in pending} - channel_ids.keys():
                known = await self.channel_access(key=key)  # a new channel of the operator's archive is approved
                channel_ids[key] = known.id if known else await self.ensure_channel(key, approval="approved")

            async def run() -> None:
                nonlocal stored
                for post in pending:
                    c = post.classification
                    h = content_hash(post.text)
                    date = _ts(post.date)
                    meta = meta_tokens(post.channel, date, post.lang, c.labels if c else (), bool(c and c.appeal))
                    inserted = list(await self.db.fetch_write(
                        "INSERT INTO posts(channel_id, message_id, text, date, first_seen, source, content_hash, lang, "
                        "state, search_meta, search_terms) VALUES (?,?,?,?,?,'export',?,?,?,?,?) "
                        "ON CONFLICT(channel_id, message_id) DO NOTHING RETURNING id",
                        (channel_ids[post.channel], post.message_id, post.text, date, date, h, post.lang,
                         "done" if c else "new", meta, self._terms(post.text))))
                    if not inserted:
                        continue
                    pid = int(inserted[0][0])
                    stored += 1
                    await self.db.execute(
                        "INSERT INTO post_edits(post_id, text, content_hash, edit_date, seen_at) VALUES (?,?,?,?,?)",
                        (pid, post.text, h, None, date))
                    if c is not None:
                        vec = post.embedding
                        await self.db.execute(
                            "INSERT INTO classifications(post_id, appeal, score, labels, label_scores, addressee, reasons, "
                            "classified_at, embedding) VALUES (?,?,?,?,?,?,?,?,?)",
                            (pid, int(c.appeal), c.score, json.dumps(list(c.labels)), json.dumps(c.label_scores),
                             c.addressee, json.dumps(list(c.reasons), ensure_ascii=False), date,
                             vec.astype(np.float16).tobytes() if vec is not None else None))

            await self._tx(run)
            pending.clear()

        for post in posts:
            pending.append(post)
            if len(pending) >= batch:
                await flush()
        if pending:
            await flush()
        await self._after_bulk_load()
        return stored

    async def _after_bulk_load(self) -> None:
        """FTS5 merges the segments a bulk load left (queries get faster)."""
        await self.db.execute("INSERT INTO posts_fts(posts_fts) VALUES ('optimize')")

    def _terms(self, text: str) -> str:
        """A post's ``search_terms`` (its lemmas; the FTS5 tokenizer folds case and diacritics itself)."""
        return text_terms(text)

    async def finish_posts(self, post_ids: Sequence[int]) -> None:
        """Classified posts whose alerts went out are 'done' — unless an edit sent one back to 'new' meanwhile."""
        ids = list(dict.fromkeys(post_ids))
        if ids:
            await self.db.execute(
                f"UPDATE posts SET state='done' WHERE state='classified' AND id IN ({','.join('?' * len(ids))})", ids)

    async def set_state(self, post_ids: Iterable[int], state: str) -> None:
        ids = list(post_ids)
        if ids:
            await self.db.executemany("UPDATE posts SET state=? WHERE id=?", [(state, i) for i in ids])

    async def unfinished_posts(self) -> list[tuple[int, str]]:
        """Posts whose processing a crash interrupted: (id, state), oldest first."""
        rows = await self._rows("SELECT id, state FROM posts WHERE state IN ('new','classified') ORDER BY id")
        return [(int(r[0]), str(r[1])) for r in rows]

    async def post_texts(self, post_ids: Sequence[int]) -> dict[int, str]:
        if not post_ids:
            return {}
        marks = ",".join("?" * len(post_ids))
        rows = await self._rows(f"SELECT id, text FROM posts WHERE id IN ({marks})", tuple(post_ids))
        return {int(r[0]): str(r[1]) for r in rows}

    async def save_classifications(self, items: Sequence[tuple[int, Classification, np.ndarray | None]], *,
                                   worker: str | None = None) -> list[int]:
        """Write the results; returns the posts written. With ``worker``, only posts that worker still
        holds (``claim_posts``) and that are still 'new' are written: a worker whose lease ran out and
        whose posts another worker took loses the race instead of writing a second result."""
        now = int(time.time())

        async def run() -> list[int]:
            nonlocal items
            if worker is not None and items:
                marks = ",".join("?" * len(items))
                owned = {int(r[0]) for r in await self.db.fetch_write(
                    f"UPDATE posts SET claim_until=NULL, attempts=0, error=NULL WHERE id IN ({marks}) AND claimed_by=? "
                    "AND state='new' RETURNING id", (*(pid for pid, _, _ in items), worker))}
                items = [it for it in items if it[0] in owned]
            if not items:
                return []
            marks = ",".join("?" * len(items))
            metas = {int(r[0]): str(r[1]) for r in await self._rows(
                f"SELECT id, search_meta FROM posts WHERE id IN ({marks})", tuple(pid for pid, _, _ in items))}
            for pid, c, vec in items:
                await self.db.execute(
                    "INSERT INTO classifications(post_id, appeal, score, labels, label_scores, addressee, "
                    "reasons, classified_at, embedding) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(post_id) DO UPDATE SET "
                    "appeal=excluded.appeal, score=excluded.score, labels=excluded.labels, "
                    "label_scores=excluded.label_scores, addressee=excluded.addressee, reasons=excluded.reasons, "
                    "classified_at=excluded.classified_at, embedding=excluded.embedding",
                    (pid, int(c.appeal), c.score, json.dumps(list(c.labels)), json.dumps(c.label_scores),
                     c.addressee, json.dumps(list(c.reasons), ensure_ascii=False), now,
                     vec.astype(np.float16).tobytes() if vec is not None else None),
                )
                meta = reclassified_meta(metas.get(pid, ""), c.lang, c.labels, c.appeal)
                await self.db.execute(  # channel, month and repost tokens stay; the classification's are replaced
                    "UPDATE posts SET lang=?, lang_conf=?, state='classified', search_meta=? WHERE id=?",
                    (c.lang, c.lang_confidence, meta, pid),
                )
            return [pid for pid, _, _ in items]

        saved: list[int] = await self._tx(run)
        return saved

    # -- work queue: classification workers in other processes (issue "Scale-out") ------------

    _SKIP_LOCKED = ""  # PostgreSQL adds FOR UPDATE SKIP LOCKED: two workers never wait on, or take, the same rows

    async def claim_posts(self, worker: str, limit: int, *, lease: float, max_attempts: int = 3,
                          now: datetime | None = None) -> list[int]:
        """Up to ``limit`` 'new' posts with text that nobody holds, or whose holder's lease ran out, now held
        by ``worker`` until ``now + lease`` seconds (``renew_claims`` extends it); oldest first.

        Taking over a lease that ran out counts as a failed attempt (its worker died or hung with
        the batch): a post that kills every worker that takes it ends in state 'error' after
        ``max_attempts``, like a post whose classification raises, instead of being taken forever.
        """
        ts = _ts(now) or int(time.time())
        await self.db.execute(
            "UPDATE posts SET state='error', claimed_by=NULL, claim_until=NULL, error=COALESCE(error || '; ', '') || "
            "'its worker stopped before writing, too often' WHERE state='new' AND claimed_by IS NOT NULL "
            "AND claim_until<=? AND attempts+1>=?", (ts, max_attempts))
        rows = await self.db.fetch_write(
            "UPDATE posts SET attempts=attempts + CASE WHEN claimed_by IS NULL THEN 0 ELSE 1 END, "
            "error=CASE WHEN claimed_by IS NULL THEN error ELSE 'worker ' || claimed_by || ' stopped before writing' END, "
            "claimed_by=?, claim_until=? WHERE id IN (SELECT id FROM posts WHERE state='new' AND COALESCE(claim_until, 0)<=? "
            f"AND length(trim(text))>0 ORDER BY id LIMIT ?{self._SKIP_LOCKED}) RETURNING id",
            (worker, ts + math.ceil(lease), ts, int(limit)))
        return sorted(int(r[0]) for r in rows)

    async def renew_claims(self, worker: str, post_ids: Sequence[int], *, lease: float, now: datetime | None = None) -> int:
        """A worker still busy with its batch keeps it: the lease runs from now again."""
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return 0
        cur = await self.db.execute(
            f"UPDATE posts SET claim_until=? WHERE claimed_by=? AND state='new' AND id IN ({','.join('?' * len(ids))})",
            ((_ts(now) or int(time.time())) + math.ceil(lease), worker, *ids))
        return max(0, cur.rowcount)

    async def release_claims(self, worker: str, post_ids: Sequence[int] | None = None, *,
                             retry_at: datetime | None = None) -> int:
        """Give back what ``worker`` holds and did not write (all, or ``post_ids``): free at once, or from
        ``retry_at`` (a failed classification's backoff). A release is not a failure: no attempt counted."""
        where = "claimed_by=? AND state='new'"
        args: list[object] = [worker]
        if post_ids is not None:
            ids = list(dict.fromkeys(post_ids))
            if not ids:
                return 0
            where += f" AND id IN ({','.join('?' * len(ids))})"
            args += ids
        cur = await self.db.execute(f"UPDATE posts SET claimed_by=NULL, claim_until=? WHERE {where}",
                                    (_ts(retry_at), *args))
        return max(0, cur.rowcount)

    async def notify(self, channel: str, payload: str = "") -> None:
        """Wake other processes (PostgreSQL's NOTIFY); SQLite has no one to tell: a no-op."""

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        raise NotImplementedError("LISTEN needs PostgreSQL ([storage] url)")

    async def lease_channels(self, owner: str, *, lease: float, source: str = "web",
                             now: datetime | None = None) -> list[str]:
        """The watched ``source`` channels ``owner`` polls now: its fair share, leased until ``now + lease``.

        Every process of a cluster calls this at each refresh of its poller: it renews what it
        holds, gives back what exceeds its share (the watched channels divided among the live
        pollers, each registered in ``pollers`` here), and takes free or expired channels up to
        it. A channel is leased to one owner at a time, so each is polled by exactly one live
        process; a dead process's channels are taken over once its leases run out, and a new
        process gets channels as the others shed theirs.
        """
        ts = _ts(now) or int(time.time())
        until = ts + math.ceil(lease)
        held = "poll_owner=? AND watched=1 AND source=?"  # what nobody took from us is still ours

        async def run() -> list[str]:
            await self.db.execute("UPDATE channels SET poll_owner=NULL, poll_until=NULL WHERE poll_owner=? "
                                  "AND (watched=0 OR source<>?)", (owner, source))
            await self.db.execute(f"UPDATE channels SET poll_until=? WHERE {held}", (until, owner, source))
            await self.db.execute("INSERT INTO pollers(owner, alive_until) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE "
                                  "SET alive_until=excluded.alive_until", (owner, until))
            await self.db.execute("DELETE FROM pollers WHERE owner IN (SELECT owner FROM pollers WHERE alive_until<=?"
                                  f"{self._SKIP_LOCKED})", (ts,))
            total = (await self._rows("SELECT COUNT(*) FROM channels WHERE watched=1 AND source=?", (source,)))[0][0]
            pollers = (await self._rows("SELECT COUNT(*) FROM pollers WHERE alive_until>?", (ts,)))[0][0]
            share = math.ceil(int(total) / max(1, int(pollers)))
            mine = [str(r[0]) for r in await self._rows(f"SELECT key FROM channels WHERE {held} ORDER BY id",
                                                        (owner, source))]
            if len(mine) > share:
                extra = mine[share:]
                await self.db.execute(f"UPDATE channels SET poll_owner=NULL, poll_until=NULL WHERE poll_owner=? AND key IN "
                                      f"({','.join('?' * len(extra))})", (owner, *extra))
                mine = mine[:share]
            elif len(mine) < share:
                taken = await self.db.fetch_write(
                    "UPDATE channels SET poll_owner=?, poll_until=? WHERE id IN (SELECT id FROM channels WHERE watched=1 "
                    f"AND source=? AND COALESCE(poll_until, 0)<=? ORDER BY id LIMIT ?{self._SKIP_LOCKED}) RETURNING key",
                    (owner, until, source, ts, share - len(mine)))
                mine += [str(r[0]) for r in taken]
            return sorted(mine)

        leased: list[str] = await self._tx(run)
        return leased

    async def posts_in_state(self, post_ids: Sequence[int], state: str) -> list[int]:
        """Those of ``post_ids`` in ``state``, in the order given."""
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return []
        rows = await self._rows(f"SELECT id FROM posts WHERE state=? AND id IN ({','.join('?' * len(ids))})", (state, *ids))
        keep = {int(r[0]) for r in rows}
        return [i for i in ids if i in keep]

    async def requeue(self, post_ids: Sequence[int]) -> None:
        """Posts in 'error' go back to the workers' queue, their failures forgotten (``appealwatch reprocess``)."""
        ids = list(dict.fromkeys(post_ids))
        if ids:
            await self.db.execute(
                f"UPDATE posts SET state='new', attempts=0, error=NULL, claimed_by=NULL, claim_until=NULL "
                f"WHERE state='error' AND id IN ({','.join('?' * len(ids))})", ids)

    async def queue_depth(self) -> tuple[int, int]:
        """('new' posts waiting for a worker, of which held under a live lease): what to watch when scaling."""
        rows = await self._rows("SELECT COUNT(*), COUNT(CASE WHEN claim_until>? THEN 1 END) FROM posts WHERE state='new'",
                                (int(time.time()),))
        return int(rows[0][0]), int(rows[0][1])

    async def classified_twins(self, post_ids: Sequence[int]) -> dict[int, tuple[Classification, np.ndarray | None]]:
        """For each post whose exact text (same content hash) was classified before, that classification.

        A repost or a redelivered copy then costs no model pass: the newest classified post
        with the same hash lends its result and its search embedding.
        """
        if not post_ids:
            return {}
        marks = ",".join("?" * len(post_ids))
        rows = await self._rows(
            "SELECT p.id, cl.appeal, cl.score, cl.labels, cl.label_scores, cl.addressee, cl.reasons, o.lang, o.lang_conf, "
            "cl.embedding FROM posts p JOIN posts o ON o.content_hash=p.content_hash AND o.id<>p.id "
            "AND o.state IN ('classified','done') JOIN classifications cl ON cl.post_id=o.id "
            f"WHERE p.id IN ({marks}) ORDER BY o.id", tuple(post_ids))
        out: dict[int, tuple[Classification, np.ndarray | None]] = {}
        for r in rows:  # ordered by the twin's id: the newest twin wins
            c = Classification(
                appeal=bool(r[1]), score=float(r[2]), labels=tuple(json.loads(r[3])), label_scores=json.loads(r[4]),
                addressee=r[5], reasons=tuple(json.loads(r[6])), lang=r[7] or "other", lang_confidence=float(r[8] or 0.0))
            vec = np.frombuffer(r[9], dtype=np.float16).astype(np.float32) if r[9] is not None else None
            out[int(r[0])] = (c, vec)
        return out

    async def save_language_only(self, post_id: int, lang: str, conf: float) -> None:
        await self.db.execute("UPDATE posts SET lang=?, lang_conf=?, state='skipped' WHERE id=?", (lang, conf, post_id))

    _POST_SELECT = """
        SELECT p.id, c.key AS channel, p.message_id, p.text, p.date, p.lang, cl.appeal, cl.score, cl.labels,
               cl.addressee, cl.reasons, c.chat_id, p.story_id, p.source,
               (SELECT posts FROM stories s WHERE s.id=p.story_id) AS reposts
        FROM posts p JOIN channels c ON c.id=p.channel_id LEFT JOIN classifications cl ON cl.post_id=p.id
    """

    @staticmethod
    def _row_to_post(r: Row, snippet: str | None = None) -> StoredPost:
        return StoredPost(
            id=int(r["id"]), channel=str(r["channel"]), message_id=int(r["message_id"]), text=str(r["text"]),
            date=_dt(r["date"]) or datetime.now(UTC), lang=r["lang"],
            appeal=None if r["appeal"] is None else bool(r["appeal"]), score=r["score"],
            labels=tuple(json.loads(r["labels"])) if r["labels"] else (), addressee=r["addressee"],
            reasons=tuple(json.loads(r["reasons"])) if r["reasons"] else (), chat_id=r["chat_id"],
            story_id=r["story_id"], repost_count=max(0, int(r["reposts"] or 1) - 1), snippet=snippet,
            source=r["source"],
        )

    async def get_post(self, post_id: int) -> StoredPost | None:
        rows = await self._rows(self._POST_SELECT + " WHERE p.id=?", (post_id,))
        return self._row_to_post(rows[0]) if rows else None

    async def find_post(self, channel: str, message_id: int) -> StoredPost | None:
        rows = await self._rows(self._POST_SELECT + " WHERE c.key=? AND p.message_id=?", (channel, message_id))
        return self._row_to_post(rows[0]) if rows else None

    async def post_edits(self, post_id: int) -> list[tuple[str, datetime | None, datetime]]:
        rows = await self._rows(
            f"SELECT text, edit_date, seen_at FROM post_edits WHERE post_id=? ORDER BY {self._EDIT_ORDER}", (post_id,)
        )
        return [(str(r[0]), _dt(r[1]), _dt(r[2]) or datetime.now(UTC)) for r in rows]

    async def count_posts(self) -> int:
        rows = await self._rows("SELECT COUNT(*) FROM posts")
        return int(rows[0][0])

    # -- stories (repost grouping) -------------------------------------------------------------

    async def story_candidates(self, since: datetime, exclude_post: int) -> list[tuple[int, int, str, bytes | None]]:
        """Recent appeals with a story: (post id, story id, content hash, embedding)."""
        rows = await self._rows(
            "SELECT p.id, p.story_id, p.content_hash, cl.embedding FROM posts p JOIN classifications cl ON cl.post_id=p.id "
            "WHERE cl.appeal=1 AND p.story_id IS NOT NULL AND p.first_seen>=? AND p.id<>? ORDER BY p.id DESC LIMIT 5000",
            (_ts(since), exclude_post),
        )
        return [(int(r[0]), int(r[1]), str(r[2]), r[3]) for r in rows]

    async def assign_story(self, post_id: int, story_id: int | None) -> int:
        now = int(time.time())
        if story_id is None:
            rows = list(await self.db.fetch_write(
                "INSERT INTO stories(first_post_id, first_seen, last_seen, posts) VALUES (?,?,?,1) RETURNING id",
                (post_id, now, now)))
            story_id = int(rows[0][0])
        else:
            await self.db.execute("UPDATE stories SET posts=posts+1, last_seen=? WHERE id=?", (now, story_id))
            # a repost: /search shows one row per story, and the index drops reposts before ranking
            await self.db.execute(
                "UPDATE posts SET search_meta = search_meta || ' ' || ? WHERE id=? AND id<>"
                "(SELECT first_post_id FROM stories WHERE id=?) AND (' ' || search_meta || ' ') NOT LIKE ?",
                (REPOST_TOKEN, post_id, story_id, f"% {REPOST_TOKEN} %"))
        await self.db.execute("UPDATE posts SET story_id=? WHERE id=?", (story_id, post_id))
        return story_id

    async def story_channels(self, story_id: int) -> list[str]:
        rows = await self._rows(
            "SELECT c.key FROM posts p JOIN channels c ON c.id=p.channel_id WHERE p.story_id=? ORDER BY p.id", (story_id,)
        )
        return [str(r[0]) for r in rows]

    async def story_first_post(self, story_id: int) -> StoredPost | None:
        """The post that opened a story: its alert is the one later reposts update."""
        rows = await self._rows(self._POST_SELECT + " WHERE p.id=(SELECT first_post_id FROM stories WHERE id=?)",
                                (story_id,))
        return self._row_to_post(rows[0]) if rows else None

    async def story_and_hash(self, post_id: int) -> tuple[int | None, str] | None:
        """A post's story (None if not grouped yet) and content hash; None for an unknown post."""
        rows = await self._rows("SELECT story_id, content_hash FROM posts WHERE id=?", (post_id,))
        if not rows:
            return None
        return (None if rows[0][0] is None else int(rows[0][0])), str(rows[0][1])

    # -- embeddings ---------------------------------------------------------------------------

    async def vector_rows(self, *, ids: Sequence[int] | None = None, after_id: int = 0,
                          limit: int = 20_000) -> list[VectorRow]:
        """Stored search embeddings with what vector search filters on, by id or a page at a time in id order."""
        select = (
            "SELECT p.id, cl.embedding, p.date, p.lang, cl.labels, cl.appeal, p.channel_id, "
            "(p.story_id IS NULL OR p.id=(SELECT first_post_id FROM stories s WHERE s.id=p.story_id)) "
            "FROM posts p JOIN classifications cl ON cl.post_id=p.id WHERE cl.embedding IS NOT NULL "
        )
        if ids is not None:
            if not ids:
                return []
            rows = await self._rows(select + f"AND p.id IN ({','.join('?' * len(ids))}) ORDER BY p.id", tuple(ids))
        else:
            rows = await self._rows(select + "AND p.id>? ORDER BY p.id LIMIT ?", (after_id, limit))
        return [VectorRow(int(r[0]), bytes(r[1]), VectorMeta(date=int(r[2]), lang=r[3], labels=tuple(json.loads(r[4] or "[]")),
                                                             appeal=bool(r[5]), channel_id=int(r[6]), story_first=bool(r[7])))
                for r in rows]

    def vector_fetcher(self) -> FetchVectors:
        """Exact vectors by post id for the search index's re-rank: its own connection, callable from any thread."""
        return sqlite_vector_fetcher(str(self.sqlite_path))

    async def embedding_of(self, post_id: int) -> np.ndarray | None:
        rows = await self._rows("SELECT embedding FROM classifications WHERE post_id=?", (post_id,))
        if not rows or rows[0][0] is None:
            return None
        return np.frombuffer(rows[0][0], dtype=np.float16).astype(np.float32)

    async def channel_appeals(self, channel: str) -> list[tuple[str | None, tuple[str, ...]]]:
        """(language, labels) of every appeal of one channel: the import summary counts them."""
        rows = await self._rows(
            "SELECT p.lang, cl.labels FROM posts p JOIN channels c ON c.id=p.channel_id "
            "JOIN classifications cl ON cl.post_id=p.id WHERE c.key=? AND cl.appeal=1", (channel,))
        return [(r[0], tuple(json.loads(r[1]))) for r in rows]

    # -- chats and subscriptions ------------------------------------------------------------

    async def ensure_chat(self, chat_id: int, *, type_: str = "private", title: str | None = None,
                          forward_original: bool = False) -> None:
        """Create the chat on first contact (``forward_original`` is the new chat's default)."""
        await self.db.execute(
            "INSERT INTO chats(chat_id, type, title, created_at, forward_original) VALUES (?,?,?,?,?) "
            "ON CONFLICT(chat_id) DO UPDATE SET title=COALESCE(excluded.title, chats.title)",
            (chat_id, type_, title, int(time.time()), int(forward_original)),
        )

    async def subscribe(self, chat_id: int, filters: Filters) -> None:
        await self.db.execute(
            "INSERT INTO subscriptions(chat_id, labels, languages, channels, min_score, created_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(chat_id) DO UPDATE SET labels=excluded.labels, languages=excluded.languages, "
            "channels=excluded.channels, min_score=excluded.min_score",
            (chat_id, json.dumps(list(filters.labels)), json.dumps(list(filters.languages)),
             json.dumps(list(filters.channels)), filters.min_score, int(time.time())),
        )
        await self.db.execute("UPDATE chats SET active=1, deactivated_reason=NULL WHERE chat_id=?", (chat_id,))

    async def unsubscribe(self, chat_id: int) -> bool:
        cur = await self.db.execute("DELETE FROM subscriptions WHERE chat_id=?", (chat_id,))
        return cur.rowcount > 0

    async def update_chat(self, chat_id: int, **fields: Any) -> None:
        allowed = {"timezone", "quiet_start", "quiet_end", "digest_mode", "digest_time", "forward_original", "active",
                   "deactivated_reason"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown chat fields {bad}")
        sets = ", ".join(f"{k}=?" for k in fields)
        await self.db.execute(f"UPDATE chats SET {sets} WHERE chat_id=?", (*fields.values(), chat_id))

    async def deactivate_chat(self, chat_id: int, reason: str) -> None:
        await self.update_chat(chat_id, active=0, deactivated_reason=reason)

    def _chat_from_row(self, r: Row, muted: tuple[str, ...]) -> ChatSettings:
        filters = None
        if r["labels"] is not None:
            filters = Filters(
                labels=tuple(json.loads(r["labels"])), languages=tuple(json.loads(r["languages"])),
                channels=tuple(json.loads(r["channels"])), min_score=r["min_score"],
            )
        return ChatSettings(
            chat_id=int(r["chat_id"]), type=r["type"], title=r["title"], active=bool(r["active"]),
            timezone=r["timezone"], quiet_start=r["quiet_start"], quiet_end=r["quiet_end"],
            digest_mode=r["digest_mode"], digest_time=r["digest_time"], forward_original=bool(r["forward_original"]),
            filters=filters, muted=muted,
        )

    async def _muted(self) -> dict[int, tuple[str, ...]]:
        rows = await self._rows(
            "SELECT m.chat_id, c.key FROM muted_channels m JOIN channels c ON c.id=m.channel_id"
        )
        out: dict[int, list[str]] = {}
        for r in rows:
            out.setdefault(int(r[0]), []).append(str(r[1]))
        return {k: tuple(v) for k, v in out.items()}

    async def chat_settings(self, chat_id: int) -> ChatSettings | None:
        rows = await self._rows(
            "SELECT ch.*, s.labels, s.languages, s.channels, s.min_score FROM chats ch "
            "LEFT JOIN subscriptions s ON s.chat_id=ch.chat_id WHERE ch.chat_id=?", (chat_id,)
        )
        if not rows:
            return None
        return self._chat_from_row(rows[0], (await self._muted()).get(chat_id, ()))

    async def subscribed_chats(self) -> list[ChatSettings]:
        rows = await self._rows(
            "SELECT ch.*, s.labels, s.languages, s.channels, s.min_score FROM chats ch "
            "JOIN subscriptions s ON s.chat_id=ch.chat_id WHERE ch.active=1"
        )
        muted = await self._muted()
        return [self._chat_from_row(r, muted.get(int(r["chat_id"]), ())) for r in rows]

    async def chats_with_digest(self) -> list[ChatSettings]:
        rows = await self._rows(
            "SELECT ch.*, s.labels, s.languages, s.channels, s.min_score FROM chats ch "
            "LEFT JOIN subscriptions s ON s.chat_id=ch.chat_id WHERE ch.active=1 AND ch.digest_mode<>'off'"
        )
        return [self._chat_from_row(r, ()) for r in rows]

    async def mute_channel(self, chat_id: int, channel: str) -> None:
        cid = await self.ensure_channel(channel)
        await self.db.execute("INSERT INTO muted_channels VALUES (?,?) ON CONFLICT DO NOTHING", (chat_id, cid))

    async def unmute_channel(self, chat_id: int, channel: str) -> None:
        await self.db.execute(
            "DELETE FROM muted_channels WHERE chat_id=? AND channel_id=(SELECT id FROM channels WHERE key=?)",
            (chat_id, channel),
        )

    # -- alerts -----------------------------------------------------------------------------

    async def claim_alert(self, chat_id: int, post_id: int, story_id: int | None, status: str = "pending") -> bool:
        """Reserve (chat, post) before sending; False if it was ever claimed (never send twice)."""
        cur = await self.db.execute(
            "INSERT INTO alerts(chat_id, post_id, story_id, status, created_at) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            (chat_id, post_id, story_id, status, int(time.time())),
        )
        return cur.rowcount == 1

    async def claim_alerts(self, post_id: int, story_id: int | None, chat_ids: Sequence[int], status: str, *,
                           lease_until: datetime | None = None, deliver_by: datetime | None = None) -> set[int]:
        """Claim (chat, post) for many chats at once; returns the chats claimed now (never twice).

        A 'pending' claim carries a lease (the sweep sends it again after ``lease_until``, so a
        crash between claim and send loses nothing) and a deadline (``deliver_by``, then 'expired').
        """
        if not chat_ids:
            return set()
        lease, deadline = _ts(lease_until), _ts(deliver_by)

        async def run() -> set[int]:
            # the rows this call inserted, from RETURNING: two processes (or tasks) claiming at once never both win
            now = int(time.time())
            chats = sorted(set(chat_ids))  # one order for every caller: concurrent claims never deadlock
            claimed: set[int] = set()
            for start in range(0, len(chats), 500):
                part = chats[start : start + 500]
                rows = await self.db.fetch_write(
                    "INSERT INTO alerts(chat_id, post_id, story_id, status, created_at, lease_until, deliver_by) VALUES "
                    + ",".join(["(?,?,?,?,?,?,?)"] * len(part)) + " ON CONFLICT DO NOTHING RETURNING chat_id",
                    [v for c in part for v in (c, post_id, story_id, status, now, lease, deadline)])
                claimed.update(int(r[0]) for r in rows)
            return claimed

        claimed: set[int] = await self._tx(run)
        return claimed

    async def finish_alerts(self, rows: Sequence[tuple[int, int, str, int | None, str | None]]) -> None:
        """(chat, post, status, message id, error) for many alerts, in one statement."""
        now = int(time.time())
        await self.db.executemany(
            "UPDATE alerts SET status=?, message_id=?, error=?, sent_at=?, lease_until=NULL WHERE chat_id=? AND post_id=?",
            [(st, mid, err, now if st == "sent" else None, chat, post) for chat, post, st, mid, err in rows])

    async def story_alerted(self, chat_id: int, story_id: int, since: datetime) -> int | None:
        """The message id of an alert this chat already got for the story within the window.

        Only an alert that reached the chat counts ('sent'), or one that will: 'held' for quiet
        hours, or 'pending' under a live lease (being sent right now). A lost claim (its lease
        ran out), a failed or an expired alert never mutes the story's later reposts.
        """
        rows = await self._rows(
            "SELECT COALESCE(message_id, 0) FROM alerts WHERE chat_id=? AND story_id=? AND created_at>=? "
            "AND (status IN ('sent','held') OR (status='pending' AND lease_until>?)) ORDER BY created_at LIMIT 1",
            (chat_id, story_id, _ts(since), int(time.time())),
        )
        return int(rows[0][0]) if rows else None

    async def release_held(self, chat_id: int, post_id: int, *, lease_until: datetime | None = None,
                           deliver_by: datetime | None = None) -> bool:
        """Move a held alert to 'pending' (a claim with a lease) — True only for the one caller that did it."""
        cur = await self.db.execute(
            "UPDATE alerts SET status='pending', lease_until=?, deliver_by=? WHERE chat_id=? AND post_id=? AND status='held'",
            (_ts(lease_until), _ts(deliver_by), chat_id, post_id))
        return cur.rowcount == 1

    async def held_alerts(self) -> list[tuple[int, int]]:
        rows = await self._rows("SELECT chat_id, post_id FROM alerts WHERE status='held' ORDER BY created_at")
        return [(int(r[0]), int(r[1])) for r in rows]

    async def alerts_for_chat(self, chat_id: int) -> list[tuple[int, str]]:
        rows = await self._rows("SELECT post_id, status FROM alerts WHERE chat_id=? ORDER BY created_at", (chat_id,))
        return [(int(r[0]), str(r[1])) for r in rows]

    async def was_alerted(self, chat_id: int, post_id: int) -> bool:
        """Did this chat get (or is it getting) an alert about this post? Its buttons are valid only there."""
        rows = await self._rows("SELECT 1 FROM alerts WHERE chat_id=? AND post_id=? LIMIT 1", (chat_id, post_id))
        return bool(rows)

    # -- delivery and self-healing: leases, retries, sweeps, failed work ------------------------

    async def postpone_alert(self, chat_id: int, post_id: int, *, retry_at: datetime, error: str) -> None:
        """A pending alert whose send failed for now: the sweep tries again after ``retry_at``."""
        await self.db.execute(
            "UPDATE alerts SET lease_until=?, attempts=attempts+1, error=? WHERE chat_id=? AND post_id=? AND status='pending'",
            (_ts(retry_at), error, chat_id, post_id))

    async def due_alerts(self, now: datetime, limit: int = 500) -> list[tuple[int, int, int]]:
        """Pending alerts whose lease ran out, still within their deadline: (chat, post, attempts), oldest first."""
        ts = _ts(now)
        rows = await self._rows(
            "SELECT chat_id, post_id, attempts FROM alerts WHERE status='pending' AND COALESCE(lease_until, 0)<=? "
            "AND COALESCE(deliver_by, ?)>=? ORDER BY created_at LIMIT ?", (ts, ts, ts, limit))
        return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def take_due_alert(self, chat_id: int, post_id: int, *, now: datetime, lease_until: datetime) -> bool:
        """Renew an expired lease — True only for the one caller that did it (two sweeps never both send)."""
        cur = await self.db.execute(
            "UPDATE alerts SET lease_until=? WHERE chat_id=? AND post_id=? AND status='pending' "
            "AND COALESCE(lease_until, 0)<=?", (_ts(lease_until), chat_id, post_id, _ts(now)))
        return cur.rowcount == 1

    async def expire_alerts(self, now: datetime) -> int:
        """Pending alerts past their deadline become 'expired' (history by then); returns how many."""
        cur = await self.db.execute(
            "UPDATE alerts SET status='expired', lease_until=NULL, "
            "error=COALESCE(error || '; ', '') || 'not delivered by its deadline' "
            "WHERE status='pending' AND deliver_by<?", (_ts(now),))
        return max(0, cur.rowcount)

    async def release_leases(self) -> int:
        """At start: every pending claim belongs to a process that died, so all are due now.

        One bot runs per database (Telegram lets one process poll a token), so no live
        process holds these leases.
        """
        cur = await self.db.execute("UPDATE alerts SET lease_until=NULL WHERE status='pending'")
        return max(0, cur.rowcount)

    async def alert_counts(self, since: datetime) -> dict[str, int]:
        """Alerts claimed since ``since``, by status (sent, pending, held, failed, expired, skipped)."""
        rows = await self._rows("SELECT status, COUNT(*) FROM alerts WHERE created_at>=? GROUP BY status", (_ts(since),))
        return {str(r[0]): int(r[1]) for r in rows}

    async def record_failures(self, post_ids: Sequence[int], error: str, *, max_attempts: int) -> dict[int, int]:
        """Count one failed classification per post; at ``max_attempts`` a post becomes state 'error'.

        Returns each post's failures so far.
        """
        ids = list(dict.fromkeys(post_ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))

        async def run() -> dict[int, int]:
            await self.db.execute(f"UPDATE posts SET attempts=attempts+1, error=? WHERE id IN ({marks})", (error, *ids))
            await self.db.execute(f"UPDATE posts SET state='error' WHERE id IN ({marks}) AND attempts>=? "
                                  "AND state IN ('new','classified')", (*ids, max_attempts))
            rows = await self._rows(f"SELECT id, attempts FROM posts WHERE id IN ({marks})", ids)
            return {int(r[0]): int(r[1]) for r in rows}

        counts: dict[int, int] = await self._tx(run)
        return counts

    async def clear_failures(self, post_ids: Sequence[int]) -> None:
        """Posts that were classified after failing before: their count and reason are history."""
        ids = list(dict.fromkeys(post_ids))
        if ids:
            await self.db.execute(f"UPDATE posts SET attempts=0, error=NULL WHERE id IN ({','.join('?' * len(ids))})", ids)

    async def failed_posts(self, limit: int | None = None) -> list[FailedPost]:
        """Posts in state 'error' (classification kept failing), newest first, with the last reason."""
        rows = await self._rows(
            "SELECT p.id, c.key, p.message_id, p.attempts, p.error FROM posts p JOIN channels c ON c.id=p.channel_id "
            "WHERE p.state='error' ORDER BY p.id DESC" + ("" if limit is None else f" LIMIT {int(limit)}"))
        return [FailedPost(int(r[0]), str(r[1]), int(r[2]), int(r[3]), str(r[4] or "")) for r in rows]

    async def count_failed_posts(self) -> int:
        rows = await self._rows("SELECT COUNT(*) FROM posts WHERE state='error'")
        return int(rows[0][0])

    async def stalled_posts(self, seen_before: datetime, limit: int = 1000) -> list[tuple[int, str]]:
        """Unfinished posts ('new', 'classified') first seen by ``seen_before``: (id, state), oldest first."""
        rows = await self._rows(
            "SELECT id, state FROM posts WHERE state IN ('new','classified') AND first_seen<=? ORDER BY id LIMIT ?",
            (_ts(seen_before), limit))
        return [(int(r[0]), str(r[1])) for r in rows]

    async def get_meta(self, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM meta WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                              (key, value))

    # -- feedback -----------------------------------------------------------------------------

    async def add_feedback(self, chat_id: int, user_id: int | None, post_id: int, verdict: str,
                           labels: Sequence[str] | None = None, *, by_admin: bool = False) -> None:
        await self.db.execute(
            "INSERT INTO feedback(chat_id, user_id, post_id, verdict, labels, created_at, by_admin) VALUES (?,?,?,?,?,?,?)",
            (chat_id, user_id, post_id, verdict, json.dumps(list(labels)) if labels is not None else None, int(time.time()),
             int(by_admin)),
        )

    async def feedback_rows(self) -> list[Row]:
        """Every verdict, ordered so that for one post a later row overrides an earlier one: users' verdicts
        first, then admins' (each in the order given). "The last row per post wins" thus means the latest
        admin verdict wins over any user's ✅/❌, and among users the latest."""
        return list(await self._rows(
            "SELECT f.post_id, f.verdict, f.labels, f.by_admin, p.text, p.lang, cl.labels AS model_labels, cl.addressee "
            "FROM feedback f JOIN posts p ON p.id=f.post_id LEFT JOIN classifications cl ON cl.post_id=f.post_id "
            "ORDER BY f.by_admin, f.id"
        ))

    # -- search and digests ----------------------------------------------------------------

    SEARCH_WINDOW = 5_000  # the newest matches holding every word are ranked by relevance…
    ANY_WORD_WINDOW = 1_000  # …and the newest of those holding only some (bench/research.py: 5,000 cost ~40 ms)
    COMMON_SHARE = 0.05  # in the any-word pass, a word in more than this share of posts is left out…
    COMMON_MIN_POSTS = 500  # …once the archive is big enough for that share to mean something

    async def _date_tokens(self, q: SearchQuery) -> list[str] | None:
        """Month tokens of the query's period, clipped to the archive's dates (None: no period; []: empty)."""
        if q.since is None and q.until is None:
            return None
        rows = await self._rows("SELECT min(date), max(date) FROM posts")
        if rows[0][0] is None:
            return []
        lo, hi = int(rows[0][0]), int(rows[0][1])
        if q.since is not None:
            lo = max(lo, _ts(q.since) or lo)
        if q.until is not None:
            hi = min(hi, _ts_end(q.until) - 1)
        return month_tokens(lo, hi) if lo <= hi else []

    # -- the full-text dialect: FTS5 here, tsquery in PostgresStorage ------------------------

    # (id, r) of the newest ``{window}`` matches of one ``?`` expression; lower r = more relevant
    _FTS_RANKED = ("SELECT rowid AS id, bm25(posts_fts, 1.0, 0.0) AS r FROM posts_fts WHERE posts_fts MATCH ? "
                   "ORDER BY rowid DESC LIMIT {window}")
    _FTS_IDS = "SELECT rowid AS id FROM posts_fts WHERE posts_fts MATCH ? ORDER BY rowid DESC LIMIT {window}"
    _FTS_COND = "p.id IN (SELECT rowid FROM posts_fts WHERE posts_fts MATCH ?)"  # posts p matching ``?``
    _AND = " AND "
    _JOIN_FIRST = "CROSS JOIN"  # SQLite: keeps the FTS subquery as the outer loop (the planner may not reorder)
    _EDIT_ORDER = "rowid"  # post_edits in the order they were seen
    # the JSON array of a post's edits, for exports
    _EDITS_JSON = ("(SELECT json_group_array(json_object('text', e.text, 'edit_date', e.edit_date, 'seen_at', "
                   "e.seen_at)) FROM post_edits e WHERE e.post_id=p.id)")
    _LABELS_EACH = ", json_each(cl.labels) j"  # joins each label of ``cl`` as ``j.value``
    _DAY = "date(p.date, 'unixepoch')"  # a post's UTC day, YYYY-MM-DD

    @staticmethod
    def _words_expr(groups: Sequence[Sequence[str]]) -> str:
        """Every group matched by any of its terms."""
        return " AND ".join(f"search_terms : {any_of(g)}" for g in groups)

    @staticmethod
    def _any_word_expr(terms: Sequence[str]) -> str:
        return f"search_terms : {any_of(terms)}"

    @staticmethod
    def _without_reposts(body: str) -> str:
        return f"{body} NOT search_meta : {REPOST_TOKEN}"

    @staticmethod
    def _filter_expr(q: SearchQuery, months: list[str] | None) -> str:
        """Filters as an FTS5 expression over ``search_meta`` (tokens, never user syntax)."""
        parts = []
        if q.lang:
            parts.append(f"search_meta : {quote('lg' + q.lang)}")
        if q.labels:
            parts.append("search_meta : " + any_of([f"lb{lbl}" for lbl in q.labels]))
        if q.channel:
            parts.append(f"search_meta : ch{q.channel.encode().hex()}")
        if q.appeals_only:
            parts.append("search_meta : isappeal")
        if months:
            parts.append("search_meta : " + any_of(months))
        return " AND ".join(parts)

    def _match_expr(self, q: SearchQuery, months: list[str] | None = None) -> str:
        """Every word (by any of its terms) and every filter: what exports and counts use."""
        return self._AND.join(filter(None, [self._words_expr(query_terms(q.words)), self._filter_expr(q, months)]))

    async def _common_groups(self, groups: list[tuple[str, ...]]) -> set[int]:
        """Indexes of the query words so frequent that, alone, they would fill the window with noise."""
        if len(groups) < 2:
            return set()
        rows = await self._rows("SELECT max(id) FROM posts")
        n_posts = int(rows[0][0] or 0)
        if n_posts < self.COMMON_MIN_POSTS:
            return set()
        cap = int(self.COMMON_SHARE * n_posts)  # a count is over the share exactly when it is over this
        counts = await self._doc_counts({t for g in groups for t in g}, cap)
        common = {i for i, g in enumerate(groups) if min(counts.get(t, 0) for t in g) > cap}
        return common if len(common) < len(groups) else set()

    async def _doc_counts(self, terms: set[str], cap: int) -> dict[str, int]:
        """Posts holding each term (any count above ``cap`` will do): FTS5's vocabulary table knows them all."""
        folded = {t: fold_token(t) for t in terms}
        marks = ",".join("?" * len(set(folded.values())))
        docs = {str(r[0]): int(r[1]) for r in await self._rows(
            f"SELECT term, doc FROM posts_vocab WHERE col='search_terms' AND term IN ({marks})", tuple(set(folded.values())))}
        return {t: docs.get(f, 0) for t, f in folded.items()}

    async def _ranked_pass(self, match: str, cond: str, args: Sequence[Any], window: int) -> list[tuple[int, float]]:
        """(id, sort key) of the newest ``window`` matches that pass ``cond``; lower key = better."""
        rows = await self._rows(
            f"SELECT m.id, m.r, COALESCE(cl.score, 0) FROM ({self._FTS_RANKED.format(window=int(window))}) m "
            f"{self._JOIN_FIRST} posts p ON p.id=m.id LEFT JOIN classifications cl ON cl.post_id=p.id {cond}",
            (match, *args),
        )
        return [(int(r[0]), float(r[1]) - 2 * float(r[2])) for r in rows]

    async def search_ranking(self, q: SearchQuery) -> SearchRanking:
        """Post ids ranked for ``q``, filters applied inside the index before the window is taken.

        Ranking is BM25 over lemmas (``bot.storage.terms``) with OR semantics: posts holding
        every word come first, then posts holding any (a very common word alone is not enough
        once the archive is large). Each pass ranks its newest matches (``SEARCH_WINDOW``,
        ``ANY_WORD_WINDOW``); the
        date range, language, labels, channel and "one row per story" are in the FTS query
        itself, so the window is taken among the posts that pass them, and ``capped`` says when
        a window filled up. Without words the filtered posts come newest first.
        """
        months = await self._date_tokens(q)
        if months == []:
            return SearchRanking([], 0, False, frozenset())
        where: list[str] = []
        args: list[Any] = []
        if q.since:
            where.append("p.date>=?")
            args.append(_ts(q.since))
        if q.until:
            where.append("p.date<?")
            args.append(_ts_end(q.until))
        where.append("(p.story_id IS NULL OR p.id=(SELECT first_post_id FROM stories s WHERE s.id=p.story_id))")
        cond = "WHERE " + " AND ".join(where)
        groups = query_terms(q.words)
        filters = self._filter_expr(q, months)
        terms = frozenset(t for g in groups for t in g)
        if not groups and not filters:
            rows = await self._rows(f"SELECT p.id FROM posts p {cond} ORDER BY p.date DESC, p.id DESC LIMIT ?",
                                    (*args, self.SEARCH_WINDOW))
            return SearchRanking([int(r[0]) for r in rows], len(rows), len(rows) >= self.SEARCH_WINDOW, terms)

        def expr(words: str) -> str:
            return self._without_reposts(self._AND.join(filter(None, [words, filters])))

        if not groups:
            rows = await self._rows(
                f"SELECT p.id FROM ({self._FTS_IDS.format(window=self.SEARCH_WINDOW)}) m {self._JOIN_FIRST} posts p "
                f"ON p.id=m.id {cond} ORDER BY p.date DESC, p.id DESC",
                (expr(""), *args))
            return SearchRanking([int(r[0]) for r in rows], len(rows), len(rows) >= self.SEARCH_WINDOW, terms)
        first = await self._ranked_pass(expr(self._words_expr(groups)), cond, args, self.SEARCH_WINDOW)
        capped = len(first) >= self.SEARCH_WINDOW
        ranked = [i for i, _ in sorted(first, key=lambda c: c[1])]
        if len(groups) > 1:
            common = await self._common_groups(groups)
            alternatives = [t for i, g in enumerate(groups) if i not in common for t in g]
            second = await self._ranked_pass(expr(self._any_word_expr(alternatives)), cond, args,
                                             self.ANY_WORD_WINDOW)
            capped = capped or len(second) >= self.ANY_WORD_WINDOW
            seen = set(ranked)
            ranked += [i for i, _ in sorted(second, key=lambda c: c[1]) if i not in seen]
        return SearchRanking(ranked, len(ranked), capped, terms)

    async def posts_for(self, ids: Sequence[int], terms: Iterable[str] = ()) -> list[StoredPost]:
        """The posts of one page, in the order given, each with a highlighted snippet when words matched."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        by_id = {int(r["id"]): r for r in await self._rows(f"{self._POST_SELECT} WHERE p.id IN ({marks})", tuple(ids))}
        wanted = set(terms)
        return [self._row_to_post(by_id[i], highlight_snippet(str(by_id[i]["text"]), wanted)) for i in ids if i in by_id]

    async def search(self, q: SearchQuery, *, limit: int = 5, offset: int = 0) -> tuple[list[StoredPost], int]:
        """One page of full-text results and the number of matches (see ``search_ranking``)."""
        ranking = await self.search_ranking(q)
        return await self.posts_for(ranking.ids[offset : offset + limit], ranking.terms), ranking.total

    async def storage_bytes(self) -> dict[str, int]:
        """Bytes on disk per table and index (dbstat), for "storage per post" in the benchmarks."""
        try:
            rows = await self._rows("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
        except sqlite3.OperationalError:  # dbstat not compiled in
            return {}
        return {str(r[0]): int(r[1]) for r in rows}

    _EXPORT_SELECT = (
        "SELECT p.id, c.key AS channel, p.message_id, p.text, p.date, p.lang, p.content_hash, p.first_seen, "
        "p.story_id, cl.appeal, cl.score, cl.labels, cl.addressee, "
        "(SELECT posts FROM stories s WHERE s.id=p.story_id) AS reposts, "
        "{edits} AS edits "
        "FROM posts p JOIN channels c ON c.id=p.channel_id LEFT JOIN classifications cl ON cl.post_id=p.id "
    )

    def _export_select(self, where: Sequence[str]) -> str:
        """One page of an export: posts after ``p.id > ?`` that pass ``where``, ``LIMIT ?``."""
        return (self._EXPORT_SELECT.replace("{edits}", self._EDITS_JSON)
                + f"WHERE {' AND '.join(['p.id > ?', *where])} ORDER BY p.id LIMIT ?")

    def _export_filter(self, q: SearchQuery) -> tuple[list[str], list[Any]]:
        """An export's conditions on ``posts p`` (the same words and filters as /search) and their arguments."""
        match = self._match_expr(q)  # dates are plain conditions here: an export reads every match anyway
        where: list[str] = []
        args: list[Any] = []
        if match:
            where.append(self._FTS_COND)
            args.append(match)
        if q.since:
            where.append("p.date>=?")
            args.append(_ts(q.since))
        if q.until:
            where.append("p.date<?")
            args.append(_ts(q.until))
        return where, args

    @staticmethod
    def _export_row(r: Row) -> dict[str, Any]:
        key, mid = str(r["channel"]), int(r["message_id"])
        edits = json.loads(r["edits"] or "[]")
        return {
            "permalink": permalink(key, mid),
            "channel": key,
            "date": _iso(r["date"]),
            "language": r["lang"],
            "appeal": None if r["appeal"] is None else bool(r["appeal"]),
            "labels": json.loads(r["labels"]) if r["labels"] else [],
            "addressee": r["addressee"],
            "score": r["score"],
            "text": r["text"],
            "content_hash": r["content_hash"],
            "first_seen": _iso(r["first_seen"]),
            "edit_history": [{"text": e["text"], "edit_date": _iso(e["edit_date"]),
                              "seen_at": _iso(e["seen_at"])} for e in edits],
            "story_id": r["story_id"],
            "repost_count": max(0, int(r["reposts"] or 1) - 1),
        }

    async def export_rows(self, q: SearchQuery, chunk: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Every matching post with its evidence, streamed in id order (never all in memory)."""
        where, base_args = self._export_filter(q)
        last = 0
        while True:
            rows = await self._rows(
                self._export_select(where),
                (last, *base_args, chunk),
            )
            if not rows:
                return
            for r in rows:
                yield self._export_row(r)
            last = int(rows[-1]["id"])

    async def count_export_rows(self, q: SearchQuery, limit: int) -> int:
        """How many posts an export of ``q`` holds, counted up to ``limit`` (the cap is checked before writing)."""
        where, args = self._export_filter(q)
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._rows(f"SELECT COUNT(*) FROM (SELECT 1 FROM posts p {cond} LIMIT ?) AS t", (*args, max(0, limit)))
        return int(rows[0][0])

    def export_rows_blocking(self, q: SearchQuery, *, limit: int | None = None,
                             chunk: int = 1000) -> Generator[dict[str, Any], None, None]:
        """``export_rows`` for a worker thread: its own read-only connection (WAL lets it read beside the bot),
        so a large export neither runs on the event loop nor holds up the shared connection. At most ``limit``."""
        where, base_args = self._export_filter(q)
        uri = self.sqlite_path.resolve().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=5000")
            last, n = 0, 0
            while limit is None or n < limit:
                size = chunk if limit is None else min(chunk, limit - n)
                rows = db.execute(
                    self._export_select(where),
                    (last, *base_args, size),
                ).fetchall()
                if not rows:
                    return
                for r in rows:
                    yield self._export_row(r)
                n += len(rows)
                last = int(rows[-1]["id"])

    async def digest_counts(self, since: datetime, until: datetime) -> dict[str, Any]:
        args = (_ts(since), _ts_end(until))
        # posts of channels waiting for (or refused) an admin's approval are not shown in digests
        base = ("FROM posts p JOIN classifications cl ON cl.post_id=p.id JOIN channels c ON c.id=p.channel_id "
                "WHERE cl.appeal=1 AND p.date>=? AND p.date<? AND c.approval='approved'")
        total = (await self._rows(f"SELECT COUNT(*), COUNT(DISTINCT COALESCE(p.story_id, -p.id)) {base}", args))[0]
        posts = (await self._rows("SELECT COUNT(*) FROM posts p JOIN channels c ON c.id=p.channel_id "
                                  "WHERE p.date>=? AND p.date<? AND c.approval='approved'", args))[0][0]
        by_label = await self._rows(
            f"SELECT j.value, COUNT(*) {base.replace('WHERE', self._LABELS_EACH + ' WHERE')} GROUP BY j.value "
            "ORDER BY 2 DESC", args)
        by_lang = await self._rows(f"SELECT p.lang, COUNT(*) {base} GROUP BY p.lang ORDER BY 2 DESC", args)
        by_channel = await self._rows(
            f"SELECT c.key, COUNT(*) {base} GROUP BY c.key ORDER BY 2 DESC LIMIT 10", args)
        per_day = await self._rows(
            f"SELECT {self._DAY} AS d, j.value, COUNT(*) "
            f"{base.replace('WHERE', self._LABELS_EACH + ' WHERE')} GROUP BY d, j.value ORDER BY d", args)
        return {
            "posts": int(posts), "appeals": int(total[0]), "stories": int(total[1]),
            "by_label": [(str(r[0]), int(r[1])) for r in by_label],
            "by_lang": [(str(r[0] or "?"), int(r[1])) for r in by_lang],
            "by_channel": [(str(r[0]), int(r[1])) for r in by_channel],
            "per_day": [(str(r[0]), str(r[1]), int(r[2])) for r in per_day],
        }

    async def top_appeals(self, since: datetime, until: datetime, limit: int = 5) -> list[StoredPost]:
        rows = await self._rows(
            self._POST_SELECT + " WHERE cl.appeal=1 AND p.date>=? AND p.date<? AND c.approval='approved' "
            "AND (p.story_id IS NULL OR p.id=(SELECT first_post_id FROM stories s WHERE s.id=p.story_id)) "
            "ORDER BY COALESCE((SELECT posts FROM stories s WHERE s.id=p.story_id), 1) DESC, cl.score DESC LIMIT ?",
            (_ts(since), _ts_end(until), limit),
        )
        return [self._row_to_post(r) for r in rows]
