"""How fast is ``parse_page`` on a real-shaped t.me/s page, against two floors.

Why: one poll of one channel costs one page parse, and the scheduler may do a
hundred a second. The floors say how much of the cost is ours:

* ``lexbor select``: selectolax parses the page and finds the posts and their
  ``data-post`` ids, with no text extraction — the least any selectolax parser does;
* ``stdlib tokenise``: ``html.parser.HTMLParser`` only tokenises the page
  (BeautifulSoup's html.parser backend would sit above this; bs4 is not installed).

Run: ``.venv/bin/python bench/webpreview_parse.py`` (prints medians of several runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selectolax.lexbor import LexborHTMLParser  # noqa: E402

from bot.sources.webpreview.parse import parse_page  # noqa: E402

PAGE = ROOT / "tests" / "fixtures" / "tme" / "channel_page.html"


def lexbor_select(html: str) -> int:
    tree = LexborHTMLParser(html)
    return sum(1 for node in tree.css(".tgme_widget_message[data-post]") if node.attributes.get("data-post"))


def stdlib_tokenise(html: str) -> int:
    parser = HTMLParser(convert_charrefs=True)
    parser.feed(html)
    parser.close()
    return 0


def full_parse(html: str) -> int:
    return len(parse_page(html, "frontline_appeals").posts)


def measure(fn: Callable[[str], int], html: str, pages: int, runs: int) -> float:
    """Median pages per second over ``runs`` runs of ``pages`` parses each."""
    fn(html)  # warm-up
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(pages):
            fn(html)
        rates.append(pages / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=300, help="parses per run")
    ap.add_argument("--runs", type=int, default=7, help="runs; the median is printed")
    args = ap.parse_args()
    html = PAGE.read_text(encoding="utf-8")
    posts = full_parse(html)
    print(f"page: {PAGE.relative_to(ROOT)} ({len(html.encode()) / 1024:.1f} KiB, {posts} posts)")
    print(f"median of {args.runs} runs x {args.pages} pages\n")
    ours = measure(full_parse, html, args.pages, args.runs)
    floor = measure(lexbor_select, html, args.pages, args.runs)
    stdlib = measure(stdlib_tokenise, html, args.pages, args.runs)
    print(f"{'parser':<34}{'pages/s':>10}{'posts/s':>10}{'ms/page':>10}")
    for name, rate in (
        ("parse_page (full extraction)", ours),
        ("lexbor select, no text (floor)", floor),
        ("stdlib HTMLParser tokenise only", stdlib),
    ):
        print(f"{name:<34}{rate:>10.0f}{rate * posts:>10.0f}{1000 / rate:>10.2f}")
    print()
    print(f"parse_page / lexbor floor:        {ours / floor:.2f}x  (the cost of text extraction and scoping)")
    print(f"parse_page / stdlib tokenise:     {ours / stdlib:.2f}x  (>1 means faster than merely tokenising)")


if __name__ == "__main__":
    main()
