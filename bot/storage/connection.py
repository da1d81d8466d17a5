"""What ``Storage`` needs from a database connection, whichever engine is behind it.

Two implement it: ``guard.GuardedConnection`` (one aiosqlite connection, writes serialised
by a lock) and ``pg_connection.PgConnection`` (an asyncpg pool). ``Storage``'s SQL is
written once, with ``?`` placeholders, in the dialect both engines share.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Row(Protocol):
    """A result row: by position and by column name (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: Any, /) -> Any: ...


class Written(Protocol):
    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    @property
    def in_transaction(self) -> bool: ...

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> Written: ...

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Written: ...

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> Iterable[Row]: ...

    async def fetch_write(self, sql: str, parameters: Iterable[Any] = ()) -> Iterable[Row]: ...

    def transaction(self) -> AbstractAsyncContextManager[None]: ...
