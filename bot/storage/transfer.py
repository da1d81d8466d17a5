"""Moving an archive from the SQLite file to PostgreSQL (``appealwatch storage migrate``).

Streamed: each table is read in rowid order, a chunk at a time, and written with
``executemany``; nothing is held in memory but one chunk. Idempotent: ids are kept and every
insert is ``ON CONFLICT DO NOTHING`` (the key-less ``fetch_errors`` checks the row first), so
an interrupted move is finished by running it again, and a second run adds nothing. Kept ids
mean the destination must be empty, or a copy of this very source (``meta`` remembers the
source): merging two archives would attach one's edits and alerts to the other's posts. Both
databases are migrated to the current schema first; the PostgreSQL id sequences are moved past
the copied ids at the end, so new rows never collide with old ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.storage.database import Storage
from bot.storage.postgres import PostgresStorage, pg_terms, redact

# parents before children (foreign keys); _migrations is each database's own
TABLES = ("channels", "fetch_errors", "posts", "post_edits", "classifications", "stories", "chats", "subscriptions",
          "muted_channels", "alerts", "feedback", "meta")
SERIAL_TABLES = ("channels", "posts", "post_edits", "stories", "feedback")
CHUNK = 2_000
MIGRATED_FROM = "migrated_from"  # meta key: the SQLite file a PostgreSQL database was copied from


class MigrationRefused(ValueError):
    """The destination holds other data: copying with kept ids would mix two archives."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    source_rows: int
    copied: int  # new in the destination
    already_there: int


Progress = Callable[[str, int, int], None]  # (table, rows done, rows in all)


async def _columns(storage: Storage, table: str) -> list[str]:
    if storage.backend == "postgresql":
        rows = await storage.db.execute_fetchall(
            "SELECT column_name FROM information_schema.columns WHERE table_schema=current_schema() AND table_name=? "
            "AND is_generated='NEVER' ORDER BY ordinal_position", (table,))
        return [str(r[0]) for r in rows]
    return [str(r[1]) for r in await storage.db.execute_fetchall(f"PRAGMA table_info({table})")]


async def _count(storage: Storage, table: str) -> int:
    rows = list(await storage.db.execute_fetchall(f"SELECT COUNT(*) FROM {table}"))
    return int(rows[0][0])


async def copy_sqlite_to_postgres(source: Path, destination: str, *, progress: Progress | None = None,
                                  chunk: int = CHUNK) -> list[TableCopy]:
    """Copy every table of the SQLite archive ``source`` into the PostgreSQL database ``destination``."""
    src = Storage(source)  # the caller checked that the file exists (opening would create it)
    dst = PostgresStorage(destination)
    await src.open()
    await dst.open()
    try:
        origin = str(source)  # the archive's identity in meta (the CLI passes it resolved)
        marked = await dst.get_meta(MIGRATED_FROM)
        if marked != origin and (await dst.count_posts() or await _count(dst, "chats")):
            raise MigrationRefused(
                f"{redact(destination)} already holds data" + (f" copied from {marked}" if marked else "")
                + "; copying keeps ids, so the destination must be empty or a copy of this same archive")
        await dst.set_meta(MIGRATED_FROM, origin)
        return [await _copy_table(src, dst, table, progress, chunk) for table in TABLES]
    finally:
        await dst.close()
        await src.close()


async def _copy_table(src: Storage, dst: PostgresStorage, table: str, progress: Progress | None, chunk: int) -> TableCopy:
    src_cols = await _columns(src, table)
    dst_cols = set(await _columns(dst, table))
    # post_edits has no key in SQLite: its rowid becomes the PostgreSQL id, so a second run finds it
    cols = [c for c in src_cols if c in dst_cols] + (["id"] if table == "post_edits" and "id" not in src_cols else [])
    select = ", ".join("rowid" if c == "id" and table == "post_edits" and "id" not in src_cols else c for c in cols)
    marks = ", ".join("?" * len(cols))
    if table == "fetch_errors":
        where = " AND ".join(f"{c} IS NOT DISTINCT FROM ?" for c in cols)
        insert = f"INSERT INTO {table} ({', '.join(cols)}) SELECT {marks} WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {where})"
    else:
        insert = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    terms_at = cols.index("search_terms") if table == "posts" and "search_terms" in cols else None
    total = await _count(src, table)
    before = await _count(dst, table)
    done = last = 0
    while True:
        rows = list(await src.db.execute_fetchall(
            f"SELECT rowid, {select} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, chunk)))
        if not rows:
            break
        batch: list[tuple[Any, ...]] = []
        for r in rows:
            values = [r[i] for i in range(1, len(cols) + 1)]
            if terms_at is not None:  # PostgreSQL's index wants the lemmas folded and split as FTS5 does
                values[terms_at] = pg_terms(str(values[terms_at]))
            batch.append(tuple(values) + (tuple(values) if table == "fetch_errors" else ()))
        async with dst.db.transaction():
            await dst.db.executemany(insert, batch)
        last = int(rows[-1][0])
        done += len(rows)
        if progress is not None:
            progress(table, done, total)
    if table in SERIAL_TABLES:
        await dst.db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                             f"GREATEST((SELECT COALESCE(MAX(id), 0) FROM {table}), 1))")
    after = await _count(dst, table)
    return TableCopy(table, total, after - before, total - (after - before))
