"""The database's shape: ordered migrations, each run once in a transaction and recorded.

sqlite-utils' way: a migration is never edited after it ships; a change is a new one, so an
old database file upgrades itself at start-up.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable

import aiosqlite

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]
log = logging.getLogger(__name__)


async def _run_script(db: aiosqlite.Connection, script: str) -> None:
    """Run statements one by one: executescript() would COMMIT and break the migration's transaction."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            await db.execute(buf)
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf[:80]!r}")


async def _m1_initial(db: aiosqlite.Connection) -> None:
    await _run_script(db,
        """
        CREATE TABLE channels (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,          -- username (lower case) or 'c:<id>'
            chat_id INTEGER,
            title TEXT,
            source TEXT NOT NULL DEFAULT 'bot',
            watched INTEGER NOT NULL DEFAULT 0,
            added_by INTEGER,
            added_at INTEGER NOT NULL,
            last_fetch_ok INTEGER,
            last_error TEXT,
            unavailable_reason TEXT
        );
        CREATE TABLE fetch_errors (
            channel_id INTEGER NOT NULL REFERENCES channels(id),
            at INTEGER NOT NULL,
            error TEXT NOT NULL
        );
        CREATE INDEX fetch_errors_at ON fetch_errors(channel_id, at);
        CREATE TABLE posts (
            id INTEGER PRIMARY KEY,
            channel_id INTEGER NOT NULL REFERENCES channels(id),
            message_id INTEGER NOT NULL,
            text TEXT NOT NULL,
            has_media INTEGER NOT NULL DEFAULT 0,
            date INTEGER NOT NULL,
            first_seen INTEGER NOT NULL,
            edit_date INTEGER,
            views INTEGER,
            forwarded_from TEXT,
            reply_to INTEGER,
            source TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            lang TEXT,
            lang_conf REAL,
            state TEXT NOT NULL DEFAULT 'new',  -- new → classified → done; 'skipped' (nothing to read)
            story_id INTEGER,
            search_meta TEXT NOT NULL DEFAULT '',  -- filter tokens indexed beside the text (see meta_tokens)
            UNIQUE(channel_id, message_id)
        );
        CREATE INDEX posts_state ON posts(state);
        CREATE INDEX posts_date ON posts(date);
        CREATE INDEX posts_hash ON posts(content_hash);
        CREATE INDEX posts_story ON posts(story_id);
        CREATE TABLE post_edits (
            post_id INTEGER NOT NULL REFERENCES posts(id),
            text TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            edit_date INTEGER,
            seen_at INTEGER NOT NULL
        );
        CREATE INDEX post_edits_post ON post_edits(post_id);
        CREATE TABLE classifications (
            post_id INTEGER PRIMARY KEY REFERENCES posts(id),
            appeal INTEGER NOT NULL,
            score REAL NOT NULL,
            labels TEXT NOT NULL,
            label_scores TEXT NOT NULL,
            addressee TEXT,
            reasons TEXT NOT NULL,
            classified_at INTEGER NOT NULL,
            embedding BLOB,
            label_mask INTEGER NOT NULL DEFAULT 0  -- bit i = LABELS[i]; cheap label filters in search
        );
        CREATE INDEX classifications_appeal ON classifications(appeal, score);
        CREATE TABLE stories (
            id INTEGER PRIMARY KEY,
            first_post_id INTEGER NOT NULL REFERENCES posts(id),
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            posts INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE chats (
            chat_id INTEGER PRIMARY KEY,
            type TEXT NOT NULL DEFAULT 'private',
            title TEXT,
            active INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL,
            timezone TEXT,
            quiet_start TEXT,
            quiet_end TEXT,
            digest_mode TEXT NOT NULL DEFAULT 'off',   -- off | daily | weekly
            digest_time TEXT,
            forward_original INTEGER NOT NULL DEFAULT 0,
            deactivated_reason TEXT
        );
        CREATE TABLE subscriptions (
            chat_id INTEGER PRIMARY KEY REFERENCES chats(chat_id),
            labels TEXT NOT NULL DEFAULT '[]',
            languages TEXT NOT NULL DEFAULT '[]',
            channels TEXT NOT NULL DEFAULT '[]',
            min_score REAL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE muted_channels (
            chat_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            PRIMARY KEY (chat_id, channel_id)
        );
        CREATE TABLE alerts (
            chat_id INTEGER NOT NULL,
            post_id INTEGER NOT NULL REFERENCES posts(id),
            story_id INTEGER,
            status TEXT NOT NULL,          -- pending | sent | held | failed | skipped
            created_at INTEGER NOT NULL,
            sent_at INTEGER,
            message_id INTEGER,
            error TEXT,
            PRIMARY KEY (chat_id, post_id)
        );
        CREATE INDEX alerts_status ON alerts(status);
        CREATE INDEX alerts_story ON alerts(chat_id, story_id);
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL,
            user_id INTEGER,
            post_id INTEGER NOT NULL REFERENCES posts(id),
            verdict TEXT NOT NULL,          -- correct | not_appeal | relabel
            labels TEXT,
            created_at INTEGER NOT NULL
        );
        CREATE VIRTUAL TABLE posts_fts USING fts5(
            text, search_meta, content='posts', content_rowid='id', tokenize='unicode61 remove_diacritics 2',
            prefix='4 5 6'
        );
        CREATE TRIGGER posts_ai AFTER INSERT ON posts BEGIN
            INSERT INTO posts_fts(rowid, text, search_meta) VALUES (new.id, new.text, new.search_meta);
        END;
        CREATE TRIGGER posts_ad AFTER DELETE ON posts BEGIN
            INSERT INTO posts_fts(posts_fts, rowid, text, search_meta)
                VALUES ('delete', old.id, old.text, old.search_meta);
        END;
        CREATE TRIGGER posts_au AFTER UPDATE OF text, search_meta ON posts BEGIN
            INSERT INTO posts_fts(posts_fts, rowid, text, search_meta)
                VALUES ('delete', old.id, old.text, old.search_meta);
            INSERT INTO posts_fts(rowid, text, search_meta) VALUES (new.id, new.text, new.search_meta);
        END;
        """
    )


async def _m2_drop_label_mask(db: aiosqlite.Connection) -> None:
    """``classifications.label_mask`` was written and never read: labels are filtered through FTS tokens."""
    await db.execute("ALTER TABLE classifications DROP COLUMN label_mask")


async def _m3_delivery(db: aiosqlite.Connection) -> None:
    """At-least-once alerts and self-healing work.

    ``alerts``: a ``pending`` row is a claim with a lease (``lease_until``): past it, the sweep
    sends it again; ``deliver_by`` bounds how long a transient failure is retried before the row
    becomes ``expired``; ``attempts`` counts retry rounds. ``posts``: ``attempts`` and ``error``
    count failed classifications (a post that fails too often is state ``error``). ``meta`` keeps
    the heartbeat that tells a restart how long the bot was down. Pending rows from before this
    migration get the default ``[alerts] max_age`` (6 h) to be delivered in.
    """
    await _run_script(db,
        """
        ALTER TABLE alerts ADD COLUMN lease_until INTEGER;   -- pending: re-sent by the sweep after this
        ALTER TABLE alerts ADD COLUMN deliver_by INTEGER;    -- pending: 'expired' after this
        ALTER TABLE alerts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        UPDATE alerts SET deliver_by = created_at + 21600 WHERE status = 'pending';
        ALTER TABLE posts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;  -- failed classifications
        ALTER TABLE posts ADD COLUMN error TEXT;                           -- the last failure's reason
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """
    )


async def _m4_access(db: aiosqlite.Connection) -> None:
    """Channel approval (a channel that adds the bot waits for an admin) and admins' verdicts on posts.

    Channels known before this migration were trusted by the old rules: they stay approved
    (``approved_at`` NULL = approved from the start). ``feedback.by_admin`` lets an admin's
    /relabel win over users' ✅/❌, whatever their order.
    """
    await _run_script(db,
        """
        ALTER TABLE channels ADD COLUMN approval TEXT NOT NULL DEFAULT 'approved';  -- approved | pending | rejected
        ALTER TABLE channels ADD COLUMN approved_at INTEGER;  -- posts first seen before it are never alerted
        ALTER TABLE channels ADD COLUMN approved_by INTEGER;
        ALTER TABLE feedback ADD COLUMN by_admin INTEGER NOT NULL DEFAULT 0;
        """
    )


async def _m5_search_terms(db: aiosqlite.Connection) -> None:
    """Search by lemmas with filters inside the index (issue "Search").

    ``posts.search_terms`` holds each post's lemmas (``bot.storage.terms``); the FTS index is
    rebuilt over (search_terms, search_meta) instead of the raw text, and ``search_meta`` gains
    the post's month token and, for reposts, ``rp``, so a date range or "one row per story"
    narrows the index before ranking. ``posts_vocab`` exposes document frequencies (the
    any-word pass leaves out words found in most posts). Existing posts are lemmatised here,
    in chunks: about a millisecond per post.
    """
    from bot.storage.fts import REPOST_TOKEN, month_token
    from bot.storage.terms import text_terms

    await _run_script(db,
        """
        DROP TRIGGER IF EXISTS posts_ai;
        DROP TRIGGER IF EXISTS posts_ad;
        DROP TRIGGER IF EXISTS posts_au;
        DROP TABLE IF EXISTS posts_fts;
        ALTER TABLE posts ADD COLUMN search_terms TEXT NOT NULL DEFAULT '';
        """
    )
    last = done = 0
    while True:
        async with db.execute(
            "SELECT p.id, p.text, p.date, p.search_meta, p.story_id IS NOT NULL AND p.id <> "
            "(SELECT first_post_id FROM stories s WHERE s.id=p.story_id) FROM posts p WHERE p.id>? ORDER BY p.id LIMIT 2000",
            (last,),
        ) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            break
        updates = []
        for pid, text, date, meta, repost in rows:
            tokens = [t for t in str(meta).split() if not t.startswith("ym") and t != REPOST_TOKEN]
            tokens.insert(1 if tokens else 0, month_token(int(date)))
            if repost:
                tokens.append(REPOST_TOKEN)
            updates.append((text_terms(str(text)), " ".join(tokens), pid))
        await db.executemany("UPDATE posts SET search_terms=?, search_meta=? WHERE id=?", updates)
        last = int(rows[-1][0])
        done += len(rows)
        if done % 50_000 < len(rows):
            log.info("search terms: %d posts lemmatised", done)
    await _run_script(db,
        """
        CREATE VIRTUAL TABLE posts_fts USING fts5(
            search_terms, search_meta, content='posts', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
        );
        CREATE VIRTUAL TABLE posts_vocab USING fts5vocab(posts_fts, 'col');
        CREATE TRIGGER posts_ai AFTER INSERT ON posts BEGIN
            INSERT INTO posts_fts(rowid, search_terms, search_meta) VALUES (new.id, new.search_terms, new.search_meta);
        END;
        CREATE TRIGGER posts_ad AFTER DELETE ON posts BEGIN
            INSERT INTO posts_fts(posts_fts, rowid, search_terms, search_meta)
                VALUES ('delete', old.id, old.search_terms, old.search_meta);
        END;
        CREATE TRIGGER posts_au AFTER UPDATE OF search_terms, search_meta ON posts BEGIN
            INSERT INTO posts_fts(posts_fts, rowid, search_terms, search_meta)
                VALUES ('delete', old.id, old.search_terms, old.search_meta);
            INSERT INTO posts_fts(rowid, search_terms, search_meta) VALUES (new.id, new.search_terms, new.search_meta);
        END;
        INSERT INTO posts_fts(posts_fts) VALUES ('rebuild');
        """
    )


async def _m6_work_queue(db: aiosqlite.Connection) -> None:
    """Classification workers (issue "Scale-out"): a worker claims 'new' posts for a while.

    ``claimed_by`` names the worker, ``claim_until`` ends its lease (unix seconds): a worker
    killed mid-batch loses nothing, another claims the posts once the lease has run out, and
    only the claim's holder may write their classification (each post is classified once).
    """
    await _run_script(db,
        """
        ALTER TABLE posts ADD COLUMN claimed_by TEXT;
        ALTER TABLE posts ADD COLUMN claim_until INTEGER;
        CREATE INDEX posts_queue ON posts(id) WHERE state = 'new';
        """
    )


async def _m7_channel_leases(db: aiosqlite.Connection) -> None:
    """Web-preview polling shared by every process of a cluster (issue "Scale-out").

    A process polls a channel while it holds the channel's lease (``poll_owner`` until
    ``poll_until``); each takes a fair share of the watched channels (``pollers`` says how many
    processes share them) and renews it, so every
    channel is polled by exactly one live process and a dead one's channels move on.
    """
    await _run_script(db,
        """
        ALTER TABLE channels ADD COLUMN poll_owner TEXT;
        ALTER TABLE channels ADD COLUMN poll_until INTEGER;
        CREATE TABLE pollers (owner TEXT PRIMARY KEY, alive_until INTEGER NOT NULL);  -- who shares the polling
        """
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_initial", _m1_initial),
    ("0002_drop_label_mask", _m2_drop_label_mask),
    ("0003_delivery", _m3_delivery),
    ("0004_access", _m4_access),
    ("0005_search_terms", _m5_search_terms),
    ("0006_work_queue", _m6_work_queue),
    ("0007_channel_leases", _m7_channel_leases),
]
