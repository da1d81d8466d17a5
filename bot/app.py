"""Build and run the Telegram application: the single place that wires everything.

Services are built once in ``post_init`` (storage opened, model loaded off the event
loop, pipeline worker started, unfinished posts resumed, jobs scheduled, sources
started) and closed in ``post_shutdown``. Tests and the demo start the very same
application by hand against the local Bot API with :func:`start_bot`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from telegram import LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes, Defaults

from bot.access import ApprovedChannelsOnly
from bot.alerts import AlertDispatcher, RetryPolicy
from bot.config import Config
from bot.pipeline import Pipeline
from bot.recovery import DowntimeReport, beat
from bot.search import index_posts, load_index
from bot.services import Services
from bot.shell.adapter import TelegramSender
from bot.shell.context import SERVICES_KEY, BotContext
from bot.shell.jobs import schedule_all
from bot.storage import Storage
from bot.storage.factory import storage_for
from bot.storage.postgres import CHANNEL_CLASSIFIED
from bot.vector_index import VectorIndex

log = logging.getLogger(__name__)

AnyApp = Application[Any, Any, Any, Any, Any, Any]


def load_classifier(config: Config) -> Any:
    from models.classifier import AppealClassifier

    m = config.model
    return AppealClassifier.load(m.base, cache_dir=m.cache_dir, heads_dir=m.heads, threads=m.threads,
                                 threshold=m.threshold, precision=m.precision)


async def _register_config_channels(app: AnyApp, services: Services) -> None:
    """Config channels: where the bot is an admin, updates bring posts; elsewhere the web preview."""
    for name in services.config.sources.channels:
        source, chat_id, title = "web", None, None
        try:
            chat = await app.bot.get_chat("@" + name)
            chat_id, title = chat.id, chat.title
            member = await app.bot.get_chat_member(chat.id, app.bot.id)
            if member.status == "administrator":
                source = "bot"
        except TelegramError as exc:
            log.info("@%s: not reachable through the Bot API (%s); using its web preview", name, exc)
        await services.storage.ensure_channel(name, chat_id=chat_id, title=title, source=source, watched=True,
                                              approval="approved")  # the operator chose it


def _start_web_source(app: AnyApp, services: Services) -> None:
    """Poll the t.me/s preview of watched channels the bot is not an admin of."""
    from bot.sources.webpreview import WebPreviewSource
    from bot.sources.webpreview.settings import channel_lease, web_settings
    from bot.worker import default_worker_name

    web = services.config.sources.web

    async def unavailable(channel: str, reason: str) -> None:
        # tell the admins once per channel and reason, not at every poll
        if await services.storage.mark_unavailable(channel, reason):
            for admin in services.config.access.admins:
                try:
                    await app.bot.send_message(admin, f"⛔ @{channel} can't be watched: {reason}")
                except TelegramError:
                    log.info("could not tell admin %s about @%s", admin, channel)

    settings = web_settings(web)
    source = WebPreviewSource(services.pipeline, settings, on_unavailable=unavailable)
    services.web_source = source
    storage = services.storage
    cluster = not services.config.pipeline.classify_in_bot
    owner = f"bot:{default_worker_name()}"

    async def channels() -> list[str]:
        if cluster:  # workers poll too: this process takes its share of the channels (Storage.lease_channels)
            return await storage.lease_channels(owner, lease=channel_lease(settings))
        return await storage.watched_channels("web")

    # Not app.create_task: Application.stop() would wait forever for this endless loop.
    services.background.append(asyncio.get_running_loop().create_task(source.run(channels), name="web-preview"))


async def _recover(storage: Storage) -> DowntimeReport:
    """Before any work: claims a dead process left pending are due now, and the heartbeat says
    since when the bot was down (the admins' summary counts what arrived meanwhile)."""
    now = datetime.now(UTC)
    orphaned = await storage.release_leases()
    if orphaned:
        log.warning("%d alerts were claimed but not recorded before the last stop; sending them again", orphaned)
    down_since = await beat(storage, now)
    if down_since is not None:
        log.info("last heartbeat %s: down for %s", down_since.isoformat(timespec="seconds"), now - down_since)
    return DowntimeReport(down_since, now)


async def _take_from_workers(storage: Storage, pipeline: Pipeline) -> None:
    """Workers classify ([pipeline] classify_in_bot = false): their NOTIFY hands the posts to the pipeline at once
    (stories, search index, alerts); the healing sweep takes any whose notification was missed."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[int]] = set()

    def done(task: asyncio.Task[int]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("taking classified posts failed; the healing sweep retries them", exc_info=task.exception())

    def classified(payload: str) -> None:
        ids = [int(x) for x in payload.split(",") if x.strip().isdigit()]
        if ids:
            task = loop.create_task(pipeline.take_classified(ids), name="take-classified")
            pending.add(task)
            task.add_done_callback(done)

    await storage.listen(CHANNEL_CLASSIFIED, classified)
    log.info("classification is left to `appealwatch worker` processes (%s)", storage.describe())


def build_application(config: Config, *, classifier: Any = None, start_sources: bool = True) -> AnyApp:
    if not config.telegram.token:
        raise ValueError("no bot token: set TELEGRAM_BOT_TOKEN or [telegram] token")

    async def post_init(app: AnyApp) -> None:
        # with admins configured, a channel that adds the bot waits for their approval (bot.access)
        storage = storage_for(config.storage, channels_need_approval=bool(config.access.admins))
        await storage.open()
        downtime = await _recover(storage)
        clf = classifier
        if clf is None:
            clf = await asyncio.get_running_loop().run_in_executor(None, load_classifier, config)
        tg = config.telegram
        dispatcher = AlertDispatcher(
            storage, TelegramSender(app.bot), min_score=config.alerts.min_score,
            story_window=timedelta(hours=config.alerts.story_window_hours), default_tz=config.digest.timezone,
            text_limit=config.alerts.text_limit, max_age=config.alerts.max_age,
            retry=RetryPolicy(retries=tg.transient_retries, base=tg.retry_delay), on_history=downtime.note,
        )
        # exact re-ranking reads float16 vectors from the database: ~235 B a post in memory (bot.vector_index)
        space = getattr(clf, "search_space", None)  # language centroids: cross-language search (models.search_space)
        vectors = VectorIndex(int(getattr(getattr(clf, "encoder", None), "dim", 384)),
                              fetch_vectors=storage.vector_fetcher(), centroids=space.posts if space is not None else None)
        loaded = await load_index(vectors, storage)
        log.info("search index: %d posts, %.0f MB", loaded, vectors.memory_bytes() / 2**20)

        async def index_classified(post_ids: list[int]) -> None:
            await index_posts(vectors, storage, post_ids)

        pipeline = Pipeline(storage, clf, alerts=ApprovedChannelsOnly(storage, dispatcher), batch_size=config.model.batch_size,
                            story_window=timedelta(hours=config.alerts.story_window_hours), on_classified=index_classified,
                            classify=config.pipeline.classify_in_bot)
        services = Services(config=config, storage=storage, pipeline=pipeline, alerts=dispatcher, classifier=clf,
                            vectors=vectors, downtime=downtime)
        app.bot_data[SERVICES_KEY] = services
        pipeline.start()
        if not config.pipeline.classify_in_bot:
            await _take_from_workers(storage, pipeline)
        from handlers.menu import bot_commands

        await app.bot.set_my_commands(bot_commands())
        await _register_config_channels(app, services)
        await pipeline.resume()
        await schedule_all(app, config, await storage.chats_with_digest())
        if start_sources:
            _start_web_source(app, services)
        if not config.access.admins:
            log.warning("no [access] admins: channels that add the bot are watched without anyone's approval")
        log.info("AppealWatch is up: %d posts stored", await storage.count_posts())

    async def post_shutdown(app: AnyApp) -> None:
        services = app.bot_data.get(SERVICES_KEY)
        if isinstance(services, Services):
            for task in services.background:
                task.cancel()
            await asyncio.gather(*services.background, return_exceptions=True)
            if services.web_source is not None:
                await services.web_source.close()
            await services.alerts.close()  # retries in progress: their claims are sent at the next start
            await services.pipeline.stop()
            await services.storage.close()

    rate = config.telegram.max_messages_per_second
    limiter = AIORateLimiter(
        max_retries=config.telegram.send_retries,
        overall_max_rate=rate if rate > 0 else 0,
        overall_time_period=1 if rate > 0 else 0,
    )
    from handlers import register

    app = (
        ApplicationBuilder()
        .token(config.telegram.token)
        .base_url(config.telegram.api_base_url)
        .base_file_url(config.telegram.api_file_url)
        .rate_limiter(limiter)
        .defaults(Defaults(parse_mode=ParseMode.HTML, tzinfo=ZoneInfo(config.digest.timezone),
                           link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .context_types(ContextTypes(context=BotContext))
        .concurrent_updates(8)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    register(app)
    return app


def run_bot(config: Config) -> None:
    """Long-polling until interrupted; unconfirmed updates come back after a crash (stored once)."""
    app = build_application(config)
    app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)


async def start_bot(app: AnyApp, *, poll_timeout: int = 1) -> None:
    """Start by hand (tests, demo): PTB only calls post_init inside run_polling."""
    await app.initialize()
    if app.post_init is not None:
        await app.post_init(app)
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=timedelta(seconds=poll_timeout),
                                    allowed_updates=Update.ALL_TYPES)


async def stop_bot(app: AnyApp) -> None:
    if app.updater is not None and app.updater.running:
        await app.updater.stop()
    if app.running:
        await app.stop()
    if app.post_shutdown is not None:
        await app.post_shutdown(app)
    await app.shutdown()


def services_of(app: AnyApp) -> Services:
    services = app.bot_data[SERVICES_KEY]
    assert isinstance(services, Services)
    return services
