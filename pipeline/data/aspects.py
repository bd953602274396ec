"""What a review talks about: clauses, and the film aspects each clause mentions.

A star says how much a reviewer liked a film, not why; "剧情拖沓，但是演员演技在线" praises the
acting and complains about the plot in one review. So a review is split into clauses (at Chinese
and ASCII punctuation, and before a turn: 但/但是/不过/可是/然而/只是/而是), and each clause is
matched against a small taxonomy of film aspects by its jieba words. The taxonomy's seed terms are
few and hand-picked; a run extends them with the words that behave like them in its reviews
(:func:`extend_terms`), and both are plain data a user can edit (settings ``aspects.terms``).

A clause that denies a complaint to make another ("不是剧情不好，是节奏太拖") is marked
``denied``: its own words read negative, but the reviewer is not complaining about that aspect.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# key: (Chinese name, English name, seed terms). Terms match whole jieba words, or the start of
# a longer word (剧情 in 剧情片), never the middle of one (the 歌 of 歌颂 is no song).
ASPECTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "plot": ("剧情", "plot & story", ("剧情", "故事", "情节", "剧本", "编剧", "逻辑", "结局",
                                      "结尾", "反转", "套路", "伏笔", "bug", "主线", "设定")),
    "acting": ("演技", "acting & cast", ("演技", "演员", "表演", "演得", "演的", "主演", "演戏",
                                         "飙戏", "面瘫", "卡司", "影帝", "影后")),
    "visuals": ("画面", "visuals & effects", ("画面", "特效", "视觉", "镜头", "摄影", "场面",
                                              "画质", "美术", "色调", "构图", "3d", "imax",
                                              "服装", "场景")),
    "music": ("音乐", "music & score", ("音乐", "配乐", "主题曲", "插曲", "歌曲", "原声", "bgm",
                                        "片尾曲", "歌")),
    "pacing": ("节奏", "pacing", ("节奏", "拖沓", "冗长", "拖", "紧凑", "太长", "太短", "剪辑",
                                  "无聊", "闷", "前半段", "后半段")),
    "directing": ("导演", "directing", ("导演", "执导", "调度", "拍得", "拍的", "拍摄")),
    "dialogue": ("台词", "dialogue", ("台词", "对白", "对话", "旁白", "配音")),
    "characters": ("人物", "characters", ("人物", "角色", "人设", "塑造", "男主", "女主",
                                          "主角", "配角", "反派", "男主角", "女主角")),
    "humour": ("笑点", "humour", ("笑点", "搞笑", "幽默", "好笑", "笑料", "喜剧", "段子", "梗",
                                  "尬", "尴尬")),
    "emotion": ("情感", "emotion", ("感动", "泪点", "煽情", "感人", "哭", "泪", "情怀", "温暖",
                                    "催泪", "共鸣", "虐")),
}  # fmt: skip
TURNS = ("但是", "不过", "可是", "然而", "只是", "而是", "但")  # longest first where they overlap
DENIALS = ("不是", "并不是", "并非", "倒不是", "也不是")
# punctuation; two spaces; one space between Chinese characters (Douban's comma: 剧情还行 演技差)
_BREAK = re.compile(
    r"[，,。.！!？?；;：:、…~～\n\r]+|\s{2,}|(?<=[\u4e00-\u9fff])\s(?=[\u4e00-\u9fff])"
)
_TURN = re.compile("(?<!不)(?=" + "|".join(TURNS) + ")")  # not the 但 of 不但 (not only)


@dataclass(frozen=True)
class Clause:
    """A stretch of a review with its offsets in the review (``text == review[start:end]``)."""

    text: str
    start: int
    end: int
    denied: bool = False  # "不是X不好" before "是Y": the reviewer takes this complaint back


def split_clauses(text: str) -> list[Clause]:
    """The clauses of ``text``: split at punctuation and before a turn word; empty pieces
    dropped; a denial followed by an assertion (不是...，是/而是...) marks the denial."""
    pieces: list[Clause] = []
    pos = 0
    for part in _BREAK.split(text):
        begin = text.find(part, pos) if part else pos
        if not part.strip():
            continue
        offset = begin
        for sub in _TURN.split(part):
            if sub.strip():
                lead = len(sub) - len(sub.lstrip())
                body = sub.strip()
                pieces.append(Clause(body, offset + lead, offset + lead + len(body)))
            offset += len(sub)
        pos = begin + len(part)
    marked = []
    for i, clause in enumerate(pieces):
        follows = pieces[i + 1].text if i + 1 < len(pieces) else ""
        denies = clause.text.startswith(DENIALS) and follows.startswith(("是", "而是"))
        marked.append(Clause(clause.text, clause.start, clause.end, denies))
    return marked


def term_index(terms: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """term -> aspect key (a term listed under two aspects belongs to the first)."""
    index: dict[str, str] = {}
    for aspect, words in terms.items():
        for word in words:
            index.setdefault(word.lower(), aspect)
    return index


def term_pattern(index: Mapping[str, str]) -> re.Pattern[str]:
    """What finds, without segmenting, the text that may name an aspect: a word matches a term
    it equals or begins with, so a lower-cased clause that holds no term names none (jieba, most
    of the cost, then runs on the clauses that do)."""
    return re.compile("|".join(sorted(map(re.escape, index), key=len, reverse=True)) or "(?!)")


def default_terms() -> dict[str, list[str]]:
    return {key: list(seeds) for key, (_, _, seeds) in ASPECTS.items()}


def clause_aspects(
    words: Sequence[tuple[str, int, int]], index: Mapping[str, str]
) -> dict[str, list[tuple[str, int, int]]]:
    """The aspects a clause mentions, each with the words that say it (``words``: the clause's
    jieba spans). A word matches a term it equals or begins with (剧情片 -> 剧情)."""
    found: dict[str, list[tuple[str, int, int]]] = {}
    for word, start, end in words:
        low = word.lower()
        aspect = index.get(low)
        if aspect is None:
            aspect = next((index[low[:n]] for n in range(len(low) - 1, 1, -1)
                           if low[:n] in index), None)  # fmt: skip
        if aspect is not None:
            found.setdefault(aspect, []).append((word, start, end))
    return found


def extend_terms(
    clauses_words: Iterable[Sequence[str]],
    terms: Mapping[str, Sequence[str]],
    stopwords: frozenset[str],
    per_aspect: int = 8,
    min_count: int = 20,
) -> dict[str, list[str]]:
    """Words of a run that behave like an aspect's terms: the Chinese words (two characters or
    more, no stopword) that share clauses with the aspect's seeds far more than with any other
    aspect (at least ``min_count`` clauses, at least 60% of their aspect clauses with this
    aspect, and more often with it than the corpus rate by a factor of 3). Returns only the new
    words, best first."""
    index = term_index(terms)
    together: dict[str, Counter[str]] = {a: Counter() for a in terms}
    seen: Counter[str] = Counter()
    with_aspect: Counter[str] = Counter()
    clauses = 0
    for words in clauses_words:
        clauses += 1
        unique = {w.lower() for w in words}
        aspects = {index[w] for w in unique if w in index}
        with_aspect.update(aspects)
        for w in unique:
            if w in index or w in stopwords or len(w) < 2 or not re.search(r"[\u4e00-\u9fff]", w):
                continue
            seen[w] += 1
            for a in aspects:
                together[a][w] += 1
    found: dict[str, list[str]] = {}
    for aspect, counts in together.items():
        base = with_aspect[aspect] / max(clauses, 1)  # share of clauses that mention the aspect
        ranked = []
        for word, n in counts.items():
            if n < min_count:
                continue
            with_any = sum(together[a][word] for a in together)
            lift = (n / seen[word]) / base
            if n >= 0.6 * with_any and lift >= 3:
                ranked.append((lift * n, word))
        found[aspect] = [w for _, w in sorted(ranked, reverse=True)[:per_aspect]]
    return found
