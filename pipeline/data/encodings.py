"""Which encoding a review file is in, and which encoding each of its rows is in.

UTF-16/32 files are recognised by their BOM or, without one, by where their NUL bytes fall, and
are read as text. Every other file is read as bytes and each row decoded on its own (ingest.py):
valid UTF-8 wins unless the row reads as Chinese words in GB18030 instead, and GB18030 is chosen
for rows that are not UTF-8 when they decode there. Decoding never proves a reading right: EUC-KR,
Shift-JIS or Big5 bytes decode as GB18030 too, into characters that form no Chinese words. So a
file whose GB18030 rows share few words with jieba's dictionary (real reviews: ~60% of their
characters sit in multi-character words; Korean, Japanese or Cyrillic read as GB18030: ~0%) is
refused with the encoding to pass instead (``--encoding``, any codec Python knows).
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata
from functools import cache
from pathlib import Path

from charset_normalizer import from_bytes

from pipeline.errors import DatasetError

BYTE_ENCODINGS = ("utf-8", "gb18030")  # decided per row
TEXT_ENCODINGS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030", *TEXT_ENCODINGS)
SNIFF_BYTES = 64 << 10
ESCAPE = "douban-escape"  # decode error handler: bad byte b -> U+DC00 + b, any byte
ESCAPED_BYTE = re.compile("[\udc00-\udcff]")  # undecodable bytes under ESCAPE
# decoded as UTF-8, GB18030 bytes mostly become two-byte characters (Latin Extended, Greek,
# Cyrillic, Hebrew, Arabic ...) or C1 controls; real Chinese reviews rarely contain them
_GB_AS_UTF8 = re.compile("[\x80-\x9f\u0100-\u07ff]")
_CJK = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
_HAN_RUN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]+")
MIN_HAN = 20  # characters a file's GB18030 rows need before their reading is judged
MIN_WORD_SHARE = 0.2  # below this share in dictionary words, GB18030 is the wrong reading


def _escape_errors(err: UnicodeDecodeError) -> tuple[str, int]:
    bad = err.object[err.start : err.end]
    return "".join(chr(0xDC00 + b) for b in bad), err.end


codecs.register_error(ESCAPE, _escape_errors)


@cache
def _dictionary() -> dict[str, int]:
    import jieba

    logging.getLogger("jieba").setLevel(logging.WARNING)
    jieba.dt.check_initialized()
    return jieba.dt.FREQ


def word_share(text: str, min_han: int = 1) -> tuple[float, int]:
    """(share of the Han characters of ``text`` inside multi-character words of jieba's
    dictionary, number of Han characters): how much ``text`` reads as Chinese. Below
    ``min_han`` characters the share is not computed (0.0; the dictionary is not loaded)."""
    import jieba

    runs = _HAN_RUN.findall(text)
    total = sum(map(len, runs))
    if total < max(min_han, 1):
        return 0.0, total
    words = _dictionary()
    covered = sum(
        len(w) for run in runs for w in jieba.dt.cut(run, HMM=False) if len(w) > 1 and words.get(w)
    )
    return covered / total, total


def _bom_encoding(head: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) when ``head`` starts with a byte order mark."""
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: it starts with the UTF-16 LE BOM
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if head.startswith(bom):
            return encoding, len(bom)
    return None


def _nul_pattern(head: bytes) -> str | None:
    """UTF-16/32 without a BOM: ASCII characters (the header, commas, digits, line ends) put
    their NUL bytes at fixed positions; stray NULs in a byte file fall anywhere."""
    head = head[: 4096 - 4096 % 4]
    if len(head) < 8 or head.count(0) < max(4, len(head) / 10):  # a stray NUL is not UTF-16
        return None
    share = [head[i::4].count(0) / len(head[i::4]) for i in range(4)]
    if min(share[2:]) > 0.9 and share[0] < 0.1:  # the top two bytes of a BMP character are 0
        return "utf-32-le"
    if min(share[:2]) > 0.9 and share[3] < 0.1:
        return "utf-32-be"
    # not "no NUL at all" on the other side: U+xx00 characters (一 is U+4E00) put one there
    even, odd = (share[0] + share[2]) / 2, (share[1] + share[3]) / 2
    if odd > 0.1 and even < odd / 4:
        return "utf-16-le"
    if even > 0.1 and odd < even / 4:
        return "utf-16-be"
    return None


def detect_encoding(path: Path, sniff_bytes: int = SNIFF_BYTES) -> str:
    """The file's encoding: by BOM, by NUL pattern (UTF-16/32 without BOM), else the
    charset-normalizer guess between UTF-8 and GB18030 (UTF-8 when it has no clear answer:
    ingest decides each row on its own anyway). A file whose rows would decode as GB18030 but
    read as no Chinese is refused, naming the encoding it looks like."""
    with open(path, "rb") as f:
        head = f.read(sniff_bytes)
    bom = _bom_encoding(head)
    if bom is not None:
        return bom[0]
    nul = _nul_pattern(head)
    if nul is not None:
        return nul
    if head.isascii():
        return "utf-8"
    utf16 = _utf16_reading(head)
    if utf16 is not None:
        return utf16
    whole_lines = head[: head.rfind(b"\n") + 1] or head
    best = from_bytes(whole_lines).best()
    name = codecs.lookup(best.encoding).name if best is not None else "utf-8"
    _refuse_unreadable(path, whole_lines, name)
    return "gb18030" if name in ("gb18030", "gbk", "gb2312", "hz") else "utf-8"


def _utf16_reading(head: bytes) -> str | None:
    """UTF-16 without a BOM whose text is mostly Chinese: too few NULs for
    :func:`_nul_pattern` (only its ASCII has them), but it decodes cleanly and reads as words."""
    try:
        head.decode("utf-8")
        return None  # valid UTF-8 (a cut character at the end aside) is UTF-8
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 3:
            return None
    for codec in ("utf-16-le", "utf-16-be"):
        try:
            text = head[: len(head) // 2 * 2].decode(codec)
        except UnicodeDecodeError:
            continue
        if "\n" not in text:
            continue
        share, han = word_share(text, MIN_HAN)
        if han >= MIN_HAN and share >= 2 * MIN_WORD_SHARE:
            return codec
    return None


def _refuse_unreadable(path: Path, head: bytes, guess: str) -> None:
    """Raise when the rows of ``head`` that would be read as GB18030 form no Chinese words."""
    gb_rows = []
    for line in head.splitlines():
        if not line.isascii() and (chosen := choose_encoding(line)) and chosen[0] == "gb18030":
            gb_rows.append(chosen[1])
    share, han = word_share("\n".join(gb_rows), MIN_HAN)
    if han < MIN_HAN or share >= MIN_WORD_SHARE:
        return
    looks = guess if guess not in ("gb18030", "gbk", "gb2312", "utf-8", "ascii") else None
    raise DatasetError(
        f"{path} is neither UTF-8 nor GB18030 Chinese: read as GB18030 only {share:.0%} of its "
        f"{han} Han characters form words"
        + (f"; its bytes look like {looks}" if looks else ""),
        f"pass its encoding, e.g. --encoding {looks or 'euc-kr, shift_jis or big5'}",
    )


def normalise_encoding(encoding: str) -> str:
    """The codec name of a user's ``--encoding`` (utf8 -> utf-8, GB18030 -> gb18030, EUC-KR ->
    euc_kr); any text codec Python knows is accepted."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise DatasetError(
            f"unknown encoding {encoding!r}",
            f"use a codec name such as {', '.join(ENCODINGS[:3])}, euc-kr, shift_jis or big5",
        )
    return info.name


def choose_encoding(data: bytes) -> tuple[str, str] | None:
    """(encoding, text) of one non-ASCII row: UTF-8 when it is valid UTF-8 (unless its GB18030
    reading is Chinese words and its UTF-8 one is not Chinese at all), GB18030 when it is valid
    and plausible there and is not a UTF-8 row with a few bad bytes; None when it is neither."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not _GB_AS_UTF8.search(text):
        return "utf-8", text
    try:
        gb = data.decode("gb18030")
    except UnicodeDecodeError:
        return ("utf-8", text) if text is not None else None
    if text is not None:  # valid UTF-8 wins over a guess: "Очень скучно", "(ノдヽ)", "café"
        share, han = word_share(gb, min_han=4)
        better = han >= 4 and share >= 0.5 and _cjk_share(text) < 0.5
        return ("gb18030", gb) if better else ("utf-8", text)
    escaped = data.decode("utf-8", ESCAPE)
    bad = len(ESCAPED_BYTE.findall(escaped))
    wide = sum(1 for c in escaped if c >= "\u0800" and not "\udc00" <= c <= "\udcff")
    if 3 * wide >= bad:  # mostly valid UTF-8: a UTF-8 row with a few corrupt bytes
        return None
    plausible = not any(unicodedata.category(c) in ("Co", "Cn") for c in gb if ord(c) > 127)
    return ("gb18030", gb) if plausible else None


def _cjk_share(text: str) -> float:
    wide = [c for c in text if ord(c) > 127]
    return sum(1 for c in wide if _CJK.match(c)) / len(wide) if wide else 1.0
