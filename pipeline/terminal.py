"""User text on a terminal: review text, film and run names are data, so escape sequences in them
(ANSI colours, OSC hyperlinks and titles, C1 controls, bidi overrides) must never reach the
terminal raw, where they could recolour, retitle or hide what the CLI prints."""

from __future__ import annotations

import json
import re
from typing import Any

# C0 (newline and tab included: one record, one line), DEL, C1, bidi marks/overrides/isolates,
# the Unicode line and paragraph separators, and lone surrogates (undecodable bytes of argv or a
# file, which no UTF-8 stream can write)
_UNSAFE = "\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff"
_CONTROL = re.compile(f"[\x00-\x1f{_UNSAFE}]")
_JSON_RAW = re.compile(f"[{_UNSAFE}]")  # json.dumps escapes C0 itself


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape (ESC -> ``\\x1b``)."""
    return _CONTROL.sub(_escape, text)


def json_line(record: Any) -> str:
    """One JSON Lines record, readable Chinese kept, every control character escaped (``\\u``
    escapes are valid JSON and decode back to the same text)."""
    raw = json.dumps(record, ensure_ascii=False)
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", raw)
