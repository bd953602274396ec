"""Cleaning and word segmentation of review text.

Cleaning (:func:`clean_text`) produces what the encoder sees; the original comment is kept
beside it. Choices, and why:

* Unicode NFKC: full-width ASCII becomes half-width (``ＡＢＣ１２３`` -> ``ABC123``) and
  full-width punctuation its ASCII form (``，！？：`` -> ``,!?:``; ``。、《》“”`` have no
  compatibility form and stay). The multilingual-e5 tokenizer (XLM-R SentencePiece, ``nmt_nfkc``
  normaliser) applies the same normalisation itself, so nothing the encoder would see is lost,
  and jieba, the duplicate check and the encoder all agree on one form of the text.
* HTML entities are unescaped (only the ``&name;`` / ``&#NN;`` forms, so ``玛丽苏&杰克苏`` survives)
  and HTML tags are removed. Only real HTML element names count as tags: Douban users write
  ``<默>`` or ``<You're my sunshine>`` as title brackets, and ``%>_<%`` as a face.
* URLs are removed (they carry no sentiment and cost encoder tokens).
* Control and invisible format characters are removed, except the zero-width joiner that glues
  emoji sequences; whitespace runs collapse to one space.
* Emoji are kept: the e5 tokenizer knows them and they carry sentiment.

Segmentation uses a dedicated ``jieba.Tokenizer`` (never the global one) that knows the films'
titles and an optional user dictionary, built once per process and configuration. Stored tokens
drop punctuation and whitespace but keep stopwords (attention maps need every word);
:func:`load_stopwords` is the one place the stopword list lives, for analytics to filter with.
"""

from __future__ import annotations

import functools
import html
import io
import itertools
import logging
import multiprocessing
import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import jieba

from pipeline.config import RESOURCES
from pipeline.errors import InputError, InputNotFoundError

USER_DICT = "user_dict.txt"  # a copy of prepare's jieba user dictionary, when prepare keeps one
STOPWORDS_FILE = RESOURCES / "stopwords_zh.txt"
FILM_WORD_FREQ = 100_000  # high enough that a title beats any split of it in jieba's DAG
SEGMENT_BATCH = 1_000  # texts per task sent to a worker process

_HTML_TAGS = (  # element names only: <默> and <You're my sunshine> are not tags
    "a|abbr|b|big|blockquote|body|br|center|cite|code|dd|del|div|dl|dt|em|font|h[1-6]|head|hr|"
    "html|i|iframe|img|ins|label|li|link|meta|ol|p|pre|q|s|script|small|span|strike|strong|style|"
    "sub|sup|table|tbody|td|th|thead|title|tr|tt|u|ul|video|audio|source|wbr"
)
_TAG_RE = re.compile(
    r"<!--.*?-->|</?(?:" + _HTML_TAGS + r")(?:\s[^<>]*)?/?>", re.IGNORECASE | re.DOTALL
)
_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
_URL_RE = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE
)
_HAN_RE = re.compile(r"[\u4e00-\u9fff]")
_ALNUM_RE = re.compile(r"[^\W_]")  # a letter or digit in any script
_ZWJ = "\u200d"


@functools.cache
def _invisible_re() -> re.Pattern[str]:
    """Control (Cc) and format (Cf) characters that are not whitespace and not the emoji ZWJ.
    Only planes 0, 1 and 14 are scanned (an eighth of the code points, so the first clean costs
    ~0.05 s, not 0.4 s): the others hold ideographs and private use, never Cc or Cf."""
    scanned = itertools.chain(range(0x20000), range(0xE0000, 0xF0000))
    chars = [
        chr(cp)
        for cp in scanned
        if unicodedata.category(chr(cp)) in ("Cc", "Cf") and not chr(cp).isspace()
    ]
    keep = {_ZWJ} | {chr(cp) for cp in range(0xE0020, 0xE0080)}  # emoji tag sequences (flags)
    return re.compile("[" + "".join(re.escape(c) for c in chars if c not in keep) + "]")


def clean_text(text: str) -> str:
    """The cleaned form of a review (see the module docstring for each step and why)."""
    text = _ENTITY_RE.sub(lambda m: html.unescape(m.group()), text)
    text = unicodedata.normalize("NFKC", text)
    text = _TAG_RE.sub(" ", text)
    text = _URL_RE.sub(" ", text)
    text = _invisible_re().sub("", text)
    return " ".join(text.split())


def clean_name(name: str) -> str:
    """A film name or header cell without control and invisible characters (a NUL inside a name
    would make a phantom second film), whitespace runs collapsed; nothing else changes."""
    return " ".join(_invisible_re().sub("", name).split())


def is_word(token: str) -> bool:
    """A token worth keeping: it has a letter, digit or symbol such as an emoji, i.e. it is not
    only punctuation or whitespace."""
    return _ALNUM_RE.search(token) is not None or any(
        unicodedata.category(c) == "So" for c in token
    )


@functools.cache
def _shipped_stopwords() -> frozenset[str]:
    return frozenset(_read_word_list(STOPWORDS_FILE))


def _read_word_list(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [w for line in lines if (w := line.strip()) and not w.startswith("#")]


def load_stopwords(extra: Path | None = None) -> frozenset[str]:
    """The shipped Chinese stopword list plus an optional user file (one word per line, ``#``
    starts a comment). Sentiment words (好 不 没 差 烂 ...) are deliberately not in it."""
    words = _shipped_stopwords()
    if extra is None:
        return words
    if not Path(extra).exists():
        raise InputNotFoundError(f"stopword file {extra} does not exist", "fix the path")
    return words | frozenset(_read_word_list(Path(extra)))


def film_words(names: Iterable[str]) -> tuple[str, ...]:
    """Dictionary words for film titles: each cleaned name split where jieba would split it
    anyway (punctuation, spaces), keeping the parts with Chinese characters."""
    words = set()
    for name in names:
        for part in jieba.re_han_default.findall(clean_text(name or "")):
            if len(part) >= 2 and _HAN_RE.search(part):
                words.add(part)
    return tuple(sorted(words))


@functools.lru_cache(maxsize=4)
def _build_tokenizer(
    words: tuple[str, ...], user_dict: str | None, _mtime: int, user_lines: tuple[str, ...] = ()
) -> jieba.Tokenizer:
    logging.getLogger("jieba").setLevel(logging.WARNING)
    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    for word in words:
        tokenizer.add_word(word, freq=FILM_WORD_FREQ)
    if user_dict is not None:
        tokenizer.load_userdict(user_dict)
    if user_lines:  # a user dictionary carried inside a run or model bundle
        tokenizer.load_userdict(io.StringIO("\n".join(user_lines)))
    return tokenizer


def require_user_dict(path: Path | None) -> Path | None:
    """The user dictionary path, checked here so that a bad one fails with a clear error in the
    main process rather than inside a worker."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(
            f"jieba user dictionary {path} does not exist; fix the path in "
            "settings.prepare.user_dict / --user-dict"
        )
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"jieba user dictionary {path} is not UTF-8; save it as UTF-8") from err
    return path


class Segmenter:
    """jieba segmentation that keeps film titles, the run's names and user-dictionary words
    whole."""

    def __init__(
        self,
        films: Iterable[str] = (),
        user_dict: Path | None = None,
        user_lines: Iterable[str] = (),
        names: Iterable[str] = (),
    ) -> None:
        self.words = tuple(sorted({*film_words(films), *names}))  # names: pipeline.data.names
        self.user_dict = require_user_dict(user_dict)
        self.user_lines = tuple(line for line in user_lines if line.strip())
        mtime = self.user_dict.stat().st_mtime_ns if self.user_dict else 0
        path = str(self.user_dict) if self.user_dict else None
        self._jieba = _build_tokenizer(self.words, path, mtime, self.user_lines)

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        """Words of ``text`` with character offsets (``text[start:end] == word``)."""
        return [(w, s, e) for w, s, e in self._jieba.tokenize(text) if is_word(w)]

    def tokens(self, text: str) -> list[str]:
        """Words of ``text``, punctuation and whitespace removed; same words as :meth:`spans`."""
        return [w for w in self._jieba.cut(text) if is_word(w)]


def word_spans(
    text: str, films: Iterable[str] = (), user_dict: Path | None = None
) -> list[tuple[str, int, int]]:
    """Words of a cleaned text with character offsets, for mapping attention onto words. Pass the
    run's film names (summary.json ``films``) to segment exactly as prepare did."""
    return Segmenter(films, user_dict).spans(text)


_worker_segmenter: Segmenter | None = None


def _init_worker(films: tuple[str, ...], user_dict: Path | None) -> None:
    global _worker_segmenter
    _worker_segmenter = Segmenter(films, user_dict)


def _segment_batch(texts: list[str]) -> list[list[str]]:
    assert _worker_segmenter is not None, "worker was not initialised"
    return [_worker_segmenter.tokens(t) for t in texts]


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where there is one: workers only run jieba (no threads, no torch), and spawn would
    re-import the parent's ``__main__`` (a Streamlit script, say) in every worker."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def segment_chunks(
    chunks: Iterable[Sequence[str]],
    films: Iterable[str] = (),
    user_dict: Path | None = None,
    workers: int = 1,
) -> Iterator[list[list[str]]]:
    """Tokens for each chunk of texts, in order. With more than one worker a process pool
    segments the next chunk while the caller handles the current one; the tokens are the same
    whatever the worker count (each worker builds the same tokenizer)."""
    films = tuple(films)
    if workers <= 1:
        segmenter = Segmenter(films, user_dict)
        for texts in chunks:
            yield [segmenter.tokens(t) for t in texts]
        return
    require_user_dict(user_dict)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(films, user_dict),
    )
    pending: deque[list[Future[list[list[str]]]]] = deque()
    try:
        for texts in chunks:
            texts = list(texts)
            pending.append(
                [
                    pool.submit(_segment_batch, texts[i : i + SEGMENT_BATCH])
                    for i in range(0, len(texts), SEGMENT_BATCH)
                ]
            )
            if len(pending) > 1:
                yield [tokens for f in pending.popleft() for tokens in f.result()]
        while pending:
            yield [tokens for f in pending.popleft() for tokens in f.result()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def segment_texts(
    texts: Sequence[str],
    films: Iterable[str] = (),
    user_dict: Path | None = None,
    workers: int = 1,
) -> list[list[str]]:
    """Tokens of each text (one chunk; see :func:`segment_chunks`)."""
    return next(segment_chunks([texts], films, user_dict, workers), [])
