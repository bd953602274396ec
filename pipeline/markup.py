"""HTML of user text, in one place: every piece of a review is escaped, and the attention
highlight looks the same in the app, the reports and a notebook."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

WordWeight = tuple[str, int, int, float]  # word, start, end (offsets in the text), weight


def _colour(weight: float) -> str:
    """White to orange: the background for a word with this share of the maximum weight."""
    alpha = min(max(weight, 0.0), 1.0)
    return f"rgba(255,140,0,{alpha:.2f})"


def highlight_html(text: str, words: Sequence[WordWeight]) -> str:
    """``text`` as HTML with each word in a span coloured by its weight relative to the heaviest
    word (its weight in the tooltip); text between words stays plain. Everything is escaped."""
    top = max((w[3] for w in words), default=0.0)
    parts, pos = [], 0
    for word, start, end, weight in sorted(words, key=lambda w: w[1]):
        if start < pos or end > len(text):
            continue  # overlapping or out-of-range span: keep the text once, unhighlighted
        parts.append(html.escape(text[pos:start]))
        share = weight / top if top > 0 else 0.0
        parts.append(
            f'<span class="att" style="background:{_colour(share)}" '
            f'title="{html.escape(word)}: {weight:.3f}">{html.escape(text[start:end])}</span>'
        )
        pos = end
    parts.append(html.escape(text[pos:]))
    return "".join(parts)


def words_html(text: str, words: Sequence[str]) -> str:
    """``text`` as HTML with the first place of each of ``words`` highlighted alike (the words
    that name an aspect in a clause). Everything is escaped."""
    found = [(w, i, i + len(w), 1.0) for w in words if (i := text.find(w)) >= 0]
    return highlight_html(text, found)


_PAGE_LINK = re.compile(r'href="([^"/:#?]+\.html)"')


def embeddable_page(html: str, param: str) -> str:
    """A report page to open inside the app: its links to sibling pages (the index's film
    links) open the app on that page (``?<param>=<page>``, in a new tab: the frame may not
    navigate the app) instead of a blank frame."""
    return _PAGE_LINK.sub(rf'href="?{param}=\1" target="_blank"', html)
