"""The storage a configuration names: the SQLite file by default, PostgreSQL when ``[storage] url`` is set."""

from __future__ import annotations

from bot.config import StorageConfig
from bot.storage.database import Storage


def storage_for(config: StorageConfig, *, channels_need_approval: bool = False) -> Storage:
    if config.url:
        from bot.storage.postgres import PostgresStorage

        return PostgresStorage(config.url, channels_need_approval=channels_need_approval, pool_size=config.pool_size)
    return Storage(config.path, channels_need_approval=channels_need_approval)
