"""/search with highlighted snippets and page buttons."""

from __future__ import annotations

import html
import secrets

from telegram import Update

from bot.arguments import UsageError, parse_search
from bot.callbacks import SearchPage
from bot.channels import channel_link, parse_post_link
from bot.domain import StoredPost
from bot.messages import Button, Rendered
from bot.search import HybridResult, hybrid_search, similar_posts
from bot.shell.adapter import keyboard
from bot.shell.context import BotContext
from bot.storage import SearchQuery
from handlers.common import command_args, edit_message, reply
from models.taxonomy import LANG_NAMES, labels_text

PAGE_SIZE = 5
MAX_SESSIONS = 2000


def highlight(snippet: str) -> str:
    """FTS5 marks matches with \\x02…\\x03; escape everything else, then bold the matches."""
    return html.escape(snippet).replace("\x02", "<b>").replace("\x03", "</b>")


def render_result(i: int, p: StoredPost) -> str:
    snippet = highlight(p.snippet) if p.snippet else html.escape(p.text[:200])
    tags = []
    if p.appeal:
        tags.append(f"🚨 {html.escape(labels_text(p.labels))} {(p.score or 0):.2f}")
    tags.append(LANG_NAMES.get(p.lang or "other", "?"))
    if p.repost_count:
        tags.append(f"🔁 {p.repost_count} repost{'s' if p.repost_count != 1 else ''}")
    return (f"{i}. {channel_link(p.channel)} · {p.date.strftime('%Y-%m-%d')} · {' · '.join(tags)}\n"
            f"{snippet}\n🔗 <a href=\"{html.escape(p.permalink)}\">open</a>")


def render_page(q: SearchQuery, posts: list[StoredPost], total: int, page: int, token: str,
                capped: bool = False) -> Rendered:
    if not posts:
        return Rendered("🔍 Nothing found. Try fewer words, another language, or drop a filter.")
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    shown = f"{total:,}+" if capped else f"{total:,}"
    note = " (the newest, ranked; add words or filters to narrow)" if capped else ""
    head = f"🔍 <b>{shown}</b> result{'s' if total != 1 else ''} for <i>{html.escape(q.words or 'filters')}</i>{note}"
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
        await reply(update, html.escape(str(exc)))
        return
    sessions = context.services.search_sessions
    if len(sessions) >= MAX_SESSIONS:
        sessions.pop(next(iter(sessions)))
    token = secrets.token_urlsafe(6)
    sessions[token] = q
    result = await _run(context, q, 0)
    page = render_page(q, result.posts, result.total, 0, token, result.capped)
    await reply(update, page.html, page)


async def search_page(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None
    button = SearchPage.decode(query.data)
    token, page_s = button.token, button.page
    q = context.services.search_sessions.get(token)
    if q is None:
        await query.answer("This search has expired — run /search again.", show_alert=True)
        return
    page = max(0, int(page_s))
    result = await _run(context, q, page)
    rendered = render_page(q, result.posts, result.total, page, token, result.capped)
    await query.answer()
    await edit_message(query, rendered.html, keyboard(rendered))


async def similar(update: Update, context: BotContext) -> None:
    """/similar <post id or t.me link> — appeals like a given one, in any language."""
    ref = command_args(update).strip()
    post = None
    if ref.isdigit():
        post = await context.storage.get_post(int(ref))
    elif (link := parse_post_link(ref)) is not None:
        post = await context.storage.find_post(*link)
    if not ref:
        await reply(update, "Usage: /similar https://t.me/channel/123 (or a post number from /search)")
        return
    if post is None:
        await reply(update, f"I have no stored post {html.escape(ref)}.")
        return
    vectors = context.services.vectors
    hits = (await similar_posts(context.storage, vectors, post.id, embed=context.services.embed_query)
            if vectors is not None else [])
    if not hits:
        await reply(update, "No similar appeals stored yet.")
        return
    lines = [f"🧭 Appeals like {channel_link(post.channel)}/{post.message_id}:"]
    for i, (p, sim) in enumerate(hits, 1):
        lines.append(render_result(i, p) + f" · similarity {sim:.2f}")
    await reply(update, "\n\n".join(lines))
