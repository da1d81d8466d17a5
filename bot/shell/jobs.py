"""Scheduled work through PTB's JobQueue: per-chat digests, publishing, held alerts, maintenance."""

from __future__ import annotations

import logging
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes

from bot.channels import chat_reference
from bot.config import Config
from bot.digest import send_digest
from bot.messages import Rendered
from bot.recovery import beat
from bot.services import Services
from bot.shell.adapter import TelegramSender
from bot.storage import ChatSettings

log = logging.getLogger(__name__)

HELD_ALERTS_EVERY = 60.0
MAINTENANCE_EVERY = 30.0  # the sweep: due alert claims, stalled posts, heartbeat, downtime summary
MAINTENANCE_FIRST = 1.0   # right after start: claims a crash left pending go out first


def _job_name(chat_id: int) -> str:
    return f"digest:{chat_id}"


async def _digest_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    from bot.shell.context import SERVICES_KEY

    services = context.bot_data[SERVICES_KEY]
    job = context.job
    assert job is not None
    chat_id: int | str = job.data[0]  # type: ignore[index]
    period: str = job.data[1]  # type: ignore[index]
    try:
        await send_digest(TelegramSender(context.bot), services.storage, chat_id, period, top=services.config.digest.top)
    except Exception:
        log.exception("scheduled digest for %s failed", chat_id)


def schedule_chat_digest(app: Application[Any, Any, Any, Any, Any, Any], chat: ChatSettings, config: Config) -> None:
    """(Re)schedule one chat's digest: daily at its time in its zone, weekly on Mondays, or none."""
    jq = app.job_queue
    if jq is None:
        return
    for job in jq.get_jobs_by_name(_job_name(chat.chat_id)):
        job.schedule_removal()
    if chat.digest_mode == "off" or not chat.active:
        return
    hh, mm = (int(x) for x in (chat.digest_time or config.digest.time.strftime("%H:%M")).split(":"))
    at = time(hh, mm, tzinfo=ZoneInfo(chat.timezone or config.digest.timezone))
    days = (0, 1, 2, 3, 4, 5, 6) if chat.digest_mode == "daily" else (1,)
    period = "24h" if chat.digest_mode == "daily" else "7d"
    jq.run_daily(_digest_job, at, days=days, name=_job_name(chat.chat_id), data=(chat.chat_id, period))


async def _held_alerts_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    from bot.shell.context import SERVICES_KEY

    services = context.bot_data[SERVICES_KEY]
    sent = await services.alerts.deliver_held()
    if sent:
        log.info("delivered %d alerts held for quiet hours", sent)


async def maintain(services: Services, sender: TelegramSender) -> None:
    """One sweep. Each step is independent: one that fails is logged and the others still run."""
    try:
        resent = await services.alerts.resend_due()
        if resent:
            log.info("sent %d pending alerts again", resent)
    except Exception:
        log.exception("the alert sweep failed")
    try:
        await services.pipeline.heal()
    except Exception:
        log.exception("the healing sweep failed")
    try:
        await beat(services.storage)
    except Exception:
        log.exception("could not write the heartbeat")
    await _report_downtime(services, sender)


async def _report_downtime(services: Services, sender: TelegramSender) -> None:
    report = services.downtime
    text = report.due(idle=services.pipeline.pending == 0) if report is not None else None
    if text is None:
        return
    log.info("downtime summary: %s", text)
    for admin in services.config.access.admins:
        try:
            await sender.post(admin, Rendered(text))
        except TelegramError:
            log.info("could not send the downtime summary to admin %s", admin)


async def _maintenance_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    from bot.shell.context import SERVICES_KEY

    await maintain(context.bot_data[SERVICES_KEY], TelegramSender(context.bot))


async def schedule_all(app: Application[Any, Any, Any, Any, Any, Any], config: Config, chats: list[ChatSettings]) -> None:
    jq = app.job_queue
    if jq is None:
        log.warning("no JobQueue (install python-telegram-bot[job-queue]); scheduled digests are off")
        return
    for chat in chats:
        schedule_chat_digest(app, chat, config)
    jq.run_repeating(_held_alerts_job, interval=HELD_ALERTS_EVERY, first=5.0, name="held-alerts")
    jq.run_repeating(_maintenance_job, interval=MAINTENANCE_EVERY, first=MAINTENANCE_FIRST, name="maintenance")
    if config.digest.publish_to is not None:
        chat_ref = chat_reference(config.digest.publish_to)
        jq.run_daily(_digest_job, config.digest.time.replace(tzinfo=ZoneInfo(config.digest.timezone)),
                     name="digest:publish", data=(chat_ref, "24h"))
