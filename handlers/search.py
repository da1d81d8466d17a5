"""/search with highlighted snippets and page buttons."""

from __future__ import annotations

import re
import secrets

from telegram import Update

from bot.arguments import UsageError, parse_search
from bot.callbacks import SearchPage
from bot.channels import channel_link, parse_post_link
from bot.domain import StoredPost
from bot.messages import Button, Rendered, html_text
from bot.search import HybridResult, hybrid_search, similar_posts
from bot.shell.adapter import keyboard
from bot.shell.context import BotContext
from bot.storage import SearchQuery
from handlers.common import command_args, edit_message, reply, reply_error
from models.taxonomy import LANG_NAMES, labels_text

PAGE_SIZE = 5
MAX_SESSIONS = 2000


MAX_PAGE = 1000  # the search window (5,000 newest matches) holds at most this many pages


def highlight(snippet: str) -> str:
    """FTS5 marks matches with \\x02…\\x03: bold those, everything else through ``html_text``.

    A post may hold raw \\x02/\\x03 itself, so the marks are paired up as they come: a stray
    opening or closing mark is dropped, an unclosed one is closed; the HTML is always valid.
    """
    out: list[str] = []
    bold = False
    for part in re.split("([\x02\x03])", snippet):
        if part == "\x02":
            if not bold:
                out.append("<b>")
                bold = True
        elif part == "\x03":
            if bold:
                out.append("</b>")
                bold = False
        else:
            out.append(html_text(part))
    if bold:
        out.append("</b>")
    return "".join(out).replace("<b></b>", "")


def render_result(i: int, p: StoredPost) -> str:
    snippet = highlight(p.snippet) if p.snippet else html_text(p.text[:200])
    tags = []
    if p.appeal:
        tags.append(f"🚨 {html_text(labels_text(p.labels))} {(p.score or 0):.2f}")
    tags.append(LANG_NAMES.get(p.lang or "other", "?"))
    if p.repost_count:
        tags.append(f"🔁 {p.repost_count} repost{'s' if p.repost_count != 1 else ''}")
    return (f"{i}. {channel_link(p.channel)} · {p.date.strftime('%Y-%m-%d')} · {' · '.join(tags)}\n"
            f"{snippet}\n🔗 <a href=\"{html_text(p.permalink)}\">open</a>")


def render_page(q: SearchQuery, posts: list[StoredPost], total: int, page: int, token: str,
                capped: bool = False) -> Rendered:
    if not posts:
        return Rendered("🔍 Nothing found. Try fewer words, another language, or drop a filter.")
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    shown = f"{total:,}+" if capped else f"{total:,}"
    note = " (the newest, ranked; add words or filters to narrow)" if capped else ""
    head = f"🔍 <b>{shown}</b> result{'s' if total != 1 else ''} for <i>{html_text(q.words or 'filters')}</i>{note}"
    body = "\n\n".join(render_result(page * PAGE_SIZE + i + 1, p) for i, p in enumerate(posts))
    nav: list[Button] = []
    if page > 0:
        nav.append(Button("◀ Prev", data=SearchPage(token, page - 1).encode()))
    nav.append(Button(f"{page + 1}/{pages}", data=SearchPage(token, page).encode()))
    if page + 1 < pages:
        nav.append(Button("Next ▶", data=SearchPage(token, page + 1).encode()))
    return Rendered(f"{head} · page {page + 1}/{pages}\n\n{body}", (tuple(nav),) if pages > 1 else ())


async def _run(context: BotContext, q: SearchQuery, page: int) -> HybridResult:
    """Full-text ranks fused with cross-lingual vector ranks (a Ukrainian query finds Russian posts)."""
    services = context.services
    return await hybrid_search(context.storage, services.vectors, services.embed_query, q,
                               limit=PAGE_SIZE, offset=page * PAGE_SIZE)


async def search(update: Update, context: BotContext) -> None:
    raw = command_args(update)
    if not raw.strip():
        await reply(update, "Usage: <code>/search words [lang:ru|uk|en] [label:surrender] [channel:@name] "
                            "[since:2026-01-01] [until:2026-02-01]</code>\nExample: <code>/search амністія lang:uk</code>")
        return
    try:
        q = parse_search(raw)
    except UsageError as exc:
        await reply_error(update, exc)
        return
    sessions = context.services.search_sessions
    if len(sessions) >= MAX_SESSIONS:
        sessions.pop(next(iter(sessions)))
    token = secrets.token_urlsafe(6)
    chat = update.effective_chat
    sessions[token] = (chat.id if chat else 0, q)  # its page buttons work in this chat only
    result = await _run(context, q, 0)
    page = render_page(q, result.posts, result.total, 0, token, result.capped)
    await reply(update, page.html, page)


async def search_page(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None
    button = SearchPage.decode(query.data)
    token, page_s = button.token, button.page
    session = context.services.search_sessions.get(token)
    chat = update.effective_chat
    if session is None or chat is None or session[0] != chat.id:
        await query.answer("This search has expired — run /search again.", show_alert=True)
        return
    q = session[1]
    page = min(max(0, int(page_s)), MAX_PAGE)
    result = await _run(context, q, page)
    rendered = render_page(q, result.posts, result.total, page, token, result.capped)
    await query.answer()
    await edit_message(query, rendered.html, keyboard(rendered))


async def similar(update: Update, context: BotContext) -> None:
    """/similar <post id or t.me link> — appeals like a given one, in any language."""
    ref = command_args(update).strip()
    post = None
    if re.fullmatch(r"[0-9]{1,18}", ref):
        post = await context.storage.get_post(int(ref))
    elif (link := parse_post_link(ref)) is not None:
        post = await context.storage.find_post(*link)
    if not ref:
        await reply(update, "Usage: /similar https://t.me/channel/123 (or a post number from /search)")
        return
    if post is None:
        await reply(update, f"I have no stored post {html_text(ref[:80])}.")
        return
    vectors = context.services.vectors
    hits = (await similar_posts(context.storage, vectors, post.id, embed=context.services.embed_post)
            if vectors is not None else [])
    if not hits:
        await reply(update, "No similar appeals stored yet.")
        return
    lines = [f"🧭 Appeals like {channel_link(post.channel)}/{post.message_id}:"]
    for i, (p, sim) in enumerate(hits, 1):
        lines.append(render_result(i, p) + f" · similarity {sim:.2f}")
    await reply(update, "\n\n".join(lines))
