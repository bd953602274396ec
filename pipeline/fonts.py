"""The CJK font that figures and word clouds draw Chinese with.

Matplotlib's default DejaVu Sans has no Chinese glyphs and draws empty boxes ("tofu"). The
``mplfonts`` package (a dependency) ships Noto Sans CJK SC; Debian's ``fonts-noto-cjk`` is the
fallback. Browsers viewing the HTML reports use the system font instead (see reports.py).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib as mpl
from matplotlib import font_manager

DEBIAN_NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def _mplfonts_font() -> Path | None:
    try:
        import mplfonts
    except ImportError:
        return None
    return Path(mplfonts.__file__).parent / "fonts" / "NotoSansCJKsc-Regular.otf"


@cache
def cjk_font_path() -> Path:
    """Path of a font file with Simplified Chinese glyphs; a clear error if none is installed."""
    candidates = [p for p in (_mplfonts_font(), DEBIAN_NOTO_CJK) if p is not None]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"no CJK font found (tried {tried}); run `pip install mplfonts` "
        "or `apt-get install fonts-noto-cjk`"
    )


@cache
def font_codepoints(path: Path) -> frozenset[int]:
    """Unicode code points the font has glyphs for (first face of a .ttc collection)."""
    from fontTools.ttLib import TTCollection, TTFont

    if path.suffix.lower() == ".ttc":
        with TTCollection(str(path)) as collection:
            return frozenset(collection.fonts[0].getBestCmap())
    with TTFont(str(path)) as font:
        return frozenset(font.getBestCmap())


def use_cjk_font() -> None:
    """Register the CJK font with matplotlib and make it the first sans-serif choice."""
    path = cjk_font_path()
    if all(Path(f.fname) != path for f in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(str(path))
    name = font_manager.FontProperties(fname=str(path)).get_name()
    sans = [f for f in mpl.rcParams["font.sans-serif"] if f != name]
    mpl.rcParams["font.sans-serif"] = [name, *sans]
    mpl.rcParams["font.family"] = "sans-serif"
    mpl.rcParams["axes.unicode_minus"] = False
