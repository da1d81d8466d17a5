"""/similar, /trend and /export through the Bot API, with the real model."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from bot.local_botapi import LocalBotAPI
from models.classifier import AppealClassifier
from tests.botkit import Channel, command, post_and_settle, running_bot

USER = 6101
RU_APPEAL = ("Российские солдаты! Сложите оружие и сдавайтесь — вам гарантируют жизнь, еду и обмен. "
             "Пишите в чат-бот «Хочу жить», частота 149.200.")
UK_APPEAL = ("Російські солдати! Складайте зброю та здавайтеся — вам гарантують життя, їжу та обмін. "
             "Пишіть у чат-бот «Хочу жити».")
FAMILY = ("Мамы российских военных! Если ваш сын пропал на фронте, найдите его в списках пленных проекта "
          "«Ищи своих» и требуйте обмена.")
WEATHER = "Погода в Харькове: +4, мокрый снег, ветер северо-западный."


async def test_similar_trend_and_export_commands(tmp_path: Path, classifier: AppealClassifier) -> None:
    chan = Channel(-1001000000091, "research_chan", "Research")
    other = Channel(-1001000000092, "other_chan", "Other")
    # USER is an admin: /export is for admins ([access] export), and the channels they add are approved
    async with LocalBotAPI() as api, running_bot(tmp_path, api, classifier, admins=(USER,)) as app:
        chan.add_bot(api, USER)
        other.add_bot(api, USER)
        ru = await post_and_settle(api, app, chan, 1, RU_APPEAL)
        uk = await post_and_settle(api, app, other, 2, UK_APPEAL)
        fam = await post_and_settle(api, app, chan, 3, FAMILY)
        await post_and_settle(api, app, chan, 4, WEATHER)
        assert ru.appeal and uk.appeal and fam.appeal

        # the Ukrainian translation is the same story; /similar lists *other* appeals (not reposts, not news)
        assert uk.story_id == ru.story_id and fam.story_id != ru.story_id
        reply = await command(api, USER, f"/similar https://t.me/research_chan/{ru.message_id}")
        text = reply.shown_text or ""
        first = next(line for line in text.splitlines() if line.startswith("1. "))
        assert "Мамы российских военных" in text and "@research_chan" in first, text
        assert "@other_chan" not in text and "Погода" not in text
        missing = await command(api, USER, "/similar https://t.me/research_chan/999")
        assert "no stored post" in (missing.shown_text or "")

        # /trend sends a PNG chart; a bad label gets a clear answer
        since = api.mark()
        api.send_user_message(USER, "/trend surrender 7d")
        photo = await api.wait_for(lambda c: c.method == "sendPhoto" and c.chat_id == USER, 30, since=since)
        data = next(iter(photo.files.values())).data
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and "surrender" in str(photo.params.get("caption"))
        bad = await command(api, USER, "/trend bananas")
        assert "Unknown label" in (bad.shown_text or "")

        # /export sends CSV and JSON documents that hold the stored posts
        since = api.mark()
        api.send_user_message(USER, "/export channel:@research_chan")
        docs = await api.wait_for_count("sendDocument", 2, 30, chat_id=USER, since=since)
        files = {next(iter(d.files.values())).filename: next(iter(d.files.values())).data for d in docs}
        rows = list(csv.DictReader(io.StringIO(files["appealwatch-export.csv"].decode("utf-8"))))
        items = json.loads(files["appealwatch-export.json"].decode("utf-8"))
        assert {r["permalink"] for r in rows} == {i["permalink"] for i in items} == {
            f"https://t.me/research_chan/{m}" for m in (1, 3, 4)}
        by_link = {i["permalink"]: i for i in items}
        assert by_link["https://t.me/research_chan/1"]["text"] == RU_APPEAL
        assert "surrender" in by_link["https://t.me/research_chan/1"]["labels"]
        assert by_link["https://t.me/research_chan/4"]["appeal"] is False
