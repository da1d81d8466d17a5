"""One lock-protected path for every write on the shared connection.

aiosqlite runs one connection on one thread, and every coroutine of the bot shares it. A
coroutine inside a transaction (``BEGIN IMMEDIATE`` … ``COMMIT``) yields at each statement;
a plain ``UPDATE`` from another coroutine at that moment would run *inside* that transaction
and be rolled back with it if it fails. So every write goes through
:class:`GuardedConnection`: outside a transaction it takes the connection's lock (it waits
for an open transaction to end); inside one it runs directly — the task that opened the
transaction holds the lock, which a context variable remembers.

Reads do not take the lock: a search must not wait behind an import's transaction, and a
read cannot be rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from typing import Any

import aiosqlite

# The GuardedConnection whose transaction the current task is inside (None: no transaction).
_HOLDER: ContextVar[GuardedConnection | None] = ContextVar("storage_transaction_holder", default=None)


class GuardedConnection:
    """The connection as ``Storage`` uses it: writes serialised with transactions, reads free."""

    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self.raw = conn
        self._lock = lock

    @property
    def in_transaction(self) -> bool:
        """True in the task that holds this connection's open transaction."""
        return _HOLDER.get() is self

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> aiosqlite.Cursor:
        if self.in_transaction:
            return await self.raw.execute(sql, tuple(parameters))
        async with self._lock:
            return await self.raw.execute(sql, tuple(parameters))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> aiosqlite.Cursor:
        if self.in_transaction:
            return await self.raw.executemany(sql, rows)
        async with self._lock:
            return await self.raw.executemany(sql, rows)

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> Iterable[sqlite3.Row]:
        return await self.raw.execute_fetchall(sql, tuple(parameters))

    async def fetch_write(self, sql: str, parameters: Iterable[Any] = ()) -> Iterable[sqlite3.Row]:
        """A write with ``RETURNING``: its rows, under the lock like every write."""
        if self.in_transaction:
            return await self.raw.execute_fetchall(sql, tuple(parameters))
        async with self._lock:
            return await self.raw.execute_fetchall(sql, tuple(parameters))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error) under the lock.

        Nested use joins the outer transaction: the statements belong to it anyway.
        """
        if self.in_transaction:
            yield
            return
        async with self._lock:
            token = _HOLDER.set(self)
            try:
                await self.raw.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    await self.raw.execute("ROLLBACK")
                    raise
                await self.raw.execute("COMMIT")
            finally:
                _HOLDER.reset(token)
