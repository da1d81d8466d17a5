"""The PostgreSQL connection as ``Storage`` uses it: the same calls as the SQLite one, over a pool.

``Storage`` is written once, in SQL both engines accept, with SQLite's ``?`` placeholders;
this wrapper turns them into asyncpg's ``$1, $2 …`` (once per statement text, cached) and
gives back what the SQLite connection does: rows that index by position and by name, and a
row count for writes. A transaction pins one pooled connection to the task that opened it
(a context variable), so a statement inside it runs on that connection and every other
task's statements run on their own pooled connections: unlike the one shared SQLite
connection, no lock serialises writers here, so ``Storage`` makes every check-then-write
atomic in SQL (``ON CONFLICT … RETURNING``, ``SKIP LOCKED``, conditional updates).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg

_TX: ContextVar[tuple[PgConnection, asyncpg.Connection] | None] = ContextVar("pg_transaction", default=None)


@lru_cache(maxsize=2048)
def to_dollar(sql: str) -> str:
    """``?`` placeholders as ``$n``; a ``?`` inside a quoted literal or identifier is left alone."""
    out: list[str] = []
    n = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Result:
    """What a write reports: rows changed (``RETURNING`` rows, if any, come from ``fetch_write``)."""

    rowcount: int


def _rowcount(status: str) -> int:
    """asyncpg reports ``'UPDATE 3'`` / ``'INSERT 0 1'``: the last number is the row count."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class PgConnection:
    """Pool-backed stand-in for ``GuardedConnection`` (same method names, same placeholders)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @property
    def raw(self) -> PgConnection:
        """Migrations run through the same wrapper (there is no lower level to hand them)."""
        return self

    @property
    def in_transaction(self) -> bool:
        held = _TX.get()
        return held is not None and held[0] is self

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        held = _TX.get()
        if held is not None and held[0] is self:
            yield held[1]
            return
        async with self.pool.acquire() as conn:
            yield conn

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> Result:
        async with self._conn() as conn:
            return Result(_rowcount(await conn.execute(to_dollar(sql), *parameters)))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Result:
        batch = [tuple(r) for r in rows]
        if not batch:
            return Result(0)
        async with self._conn() as conn:
            await conn.executemany(to_dollar(sql), batch)
        return Result(len(batch))

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> Sequence[asyncpg.Record]:
        async with self._conn() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(to_dollar(sql), *parameters)
            return rows

    async def fetch_write(self, sql: str, parameters: Iterable[Any] = ()) -> Sequence[asyncpg.Record]:
        """A write with ``RETURNING``: its rows (the SQLite connection takes its write lock for this)."""
        return await self.execute_fetchall(sql, parameters)

    async def script(self, sql: str) -> None:
        """Several statements without parameters (migrations)."""
        async with self._conn() as conn:
            await conn.execute(sql)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One pooled connection for the task's statements, committed at the end (rolled back on error).

        Nested use joins the outer transaction, as with SQLite.
        """
        if self.in_transaction:
            yield
            return
        async with self.pool.acquire() as conn, conn.transaction():
            token = _TX.set((self, conn))
            try:
                yield
            finally:
                _TX.reset(token)
