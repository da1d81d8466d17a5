"""The PostgreSQL shape of the database: the same migrations, by name and meaning, as ``schema.py``.

Each SQLite migration has its PostgreSQL twin here, so one list of names describes both
engines (``_migrations`` records them the same way). Types are PostgreSQL's: 64-bit
integers for ids and Telegram chat ids, ``BYTEA`` for embeddings, ``BIGSERIAL`` for row
ids. Full-text search is a stored ``tsvector`` column over the post's lemmas (weight A) and
filter tokens (weight D), behind a GIN index: the FTS5 table's job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.storage.pg_connection import PgConnection

PgMigration = Callable[[PgConnection], Awaitable[None]]


def _script(sql: str) -> PgMigration:
    async def run(db: PgConnection) -> None:
        await db.script(sql)

    return run


_M1_INITIAL = """
CREATE TABLE channels (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    chat_id BIGINT,
    title TEXT,
    source TEXT NOT NULL DEFAULT 'bot',
    watched INTEGER NOT NULL DEFAULT 0,
    added_by BIGINT,
    added_at BIGINT NOT NULL,
    last_fetch_ok BIGINT,
    last_error TEXT,
    unavailable_reason TEXT
);
CREATE TABLE fetch_errors (
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    at BIGINT NOT NULL,
    error TEXT NOT NULL
);
CREATE INDEX fetch_errors_at ON fetch_errors(channel_id, at);
CREATE TABLE posts (
    id BIGSERIAL PRIMARY KEY,
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    message_id BIGINT NOT NULL,
    text TEXT NOT NULL,
    has_media INTEGER NOT NULL DEFAULT 0,
    date BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    edit_date BIGINT,
    views BIGINT,
    forwarded_from TEXT,
    reply_to BIGINT,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    lang TEXT,
    lang_conf DOUBLE PRECISION,
    state TEXT NOT NULL DEFAULT 'new',
    story_id BIGINT,
    search_meta TEXT NOT NULL DEFAULT '',
    UNIQUE(channel_id, message_id)
);
CREATE INDEX posts_state ON posts(state);
CREATE INDEX posts_date ON posts(date);
CREATE INDEX posts_hash ON posts(content_hash);
CREATE INDEX posts_story ON posts(story_id);
CREATE TABLE post_edits (
    id BIGSERIAL PRIMARY KEY,
    post_id BIGINT NOT NULL REFERENCES posts(id),
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    edit_date BIGINT,
    seen_at BIGINT NOT NULL
);
CREATE INDEX post_edits_post ON post_edits(post_id);
CREATE TABLE classifications (
    post_id BIGINT PRIMARY KEY REFERENCES posts(id),
    appeal INTEGER NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    labels TEXT NOT NULL,
    label_scores TEXT NOT NULL,
    addressee TEXT,
    reasons TEXT NOT NULL,
    classified_at BIGINT NOT NULL,
    embedding BYTEA,
    label_mask INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX classifications_appeal ON classifications(appeal, score);
CREATE TABLE stories (
    id BIGSERIAL PRIMARY KEY,
    first_post_id BIGINT NOT NULL REFERENCES posts(id),
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    posts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE chats (
    chat_id BIGINT PRIMARY KEY,
    type TEXT NOT NULL DEFAULT 'private',
    title TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    timezone TEXT,
    quiet_start TEXT,
    quiet_end TEXT,
    digest_mode TEXT NOT NULL DEFAULT 'off',
    digest_time TEXT,
    forward_original INTEGER NOT NULL DEFAULT 0,
    deactivated_reason TEXT
);
CREATE TABLE subscriptions (
    chat_id BIGINT PRIMARY KEY REFERENCES chats(chat_id),
    labels TEXT NOT NULL DEFAULT '[]',
    languages TEXT NOT NULL DEFAULT '[]',
    channels TEXT NOT NULL DEFAULT '[]',
    min_score DOUBLE PRECISION,
    created_at BIGINT NOT NULL
);
CREATE TABLE muted_channels (
    chat_id BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    PRIMARY KEY (chat_id, channel_id)
);
CREATE TABLE alerts (
    chat_id BIGINT NOT NULL,
    post_id BIGINT NOT NULL REFERENCES posts(id),
    story_id BIGINT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    message_id BIGINT,
    error TEXT,
    PRIMARY KEY (chat_id, post_id)
);
CREATE INDEX alerts_status ON alerts(status);
CREATE INDEX alerts_story ON alerts(chat_id, story_id);
CREATE TABLE feedback (
    id BIGSERIAL PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    user_id BIGINT,
    post_id BIGINT NOT NULL REFERENCES posts(id),
    verdict TEXT NOT NULL,
    labels TEXT,
    created_at BIGINT NOT NULL
);
"""

_M3_DELIVERY = """
ALTER TABLE alerts ADD COLUMN lease_until BIGINT;
ALTER TABLE alerts ADD COLUMN deliver_by BIGINT;
ALTER TABLE alerts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
UPDATE alerts SET deliver_by = created_at + 21600 WHERE status = 'pending';
ALTER TABLE posts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE posts ADD COLUMN error TEXT;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_M4_ACCESS = """
ALTER TABLE channels ADD COLUMN approval TEXT NOT NULL DEFAULT 'approved';
ALTER TABLE channels ADD COLUMN approved_at BIGINT;
ALTER TABLE channels ADD COLUMN approved_by BIGINT;
ALTER TABLE feedback ADD COLUMN by_admin INTEGER NOT NULL DEFAULT 0;
"""

# search_terms holds the lemmas already folded and split the way FTS5's tokenizer would
# (PostgresStorage._terms), so the 'simple' configuration only has to lower-case them.
_M5_SEARCH_TERMS = """
ALTER TABLE posts ADD COLUMN search_terms TEXT NOT NULL DEFAULT '';
ALTER TABLE posts ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', search_terms), 'A') || setweight(to_tsvector('simple', search_meta), 'D')
) STORED;
CREATE INDEX posts_search ON posts USING GIN (search_tsv);
"""

_M6_WORK_QUEUE = """
ALTER TABLE posts ADD COLUMN claimed_by TEXT;
ALTER TABLE posts ADD COLUMN claim_until BIGINT;
CREATE INDEX posts_queue ON posts(id) WHERE state = 'new';
"""

PG_MIGRATIONS: list[tuple[str, PgMigration]] = [
    ("0001_initial", _script(_M1_INITIAL)),
    ("0002_drop_label_mask", _script("ALTER TABLE classifications DROP COLUMN label_mask")),
    ("0003_delivery", _script(_M3_DELIVERY)),
    ("0004_access", _script(_M4_ACCESS)),
    ("0005_search_terms", _script(_M5_SEARCH_TERMS)),
    ("0006_work_queue", _script(_M6_WORK_QUEUE)),
    ("0007_channel_leases", _script("ALTER TABLE channels ADD COLUMN poll_owner TEXT; "
                                    "ALTER TABLE channels ADD COLUMN poll_until BIGINT; "
                                    "CREATE TABLE pollers (owner TEXT PRIMARY KEY, alive_until BIGINT NOT NULL);")),
]
