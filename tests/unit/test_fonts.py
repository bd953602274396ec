"""The CJK font: it exists, covers common review characters (its cmap, read with fontTools), and
matplotlib draws glyphs with it."""

from __future__ import annotations

import warnings

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.fonts import cjk_font_path, font_codepoints, use_cjk_font

COMMON = "的好看电影烂"


def test_the_font_covers_common_chinese_characters() -> None:
    path = cjk_font_path()
    assert path.is_file()
    glyphs = font_codepoints(path)
    missing = [c for c in COMMON if ord(c) not in glyphs]
    assert not missing, f"{path} lacks {missing}"
    assert ord("👍") not in glyphs  # emoji are not in a CJK text font: word clouds skip them


def _render(text: str) -> np.ndarray:
    fig = Figure(figsize=(3, 1), dpi=80)
    fig.text(0.05, 0.3, text, fontsize=28)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., 0].astype(int)


def test_matplotlib_draws_chinese_as_distinct_glyphs() -> None:
    use_cjk_font()
    use_cjk_font()  # idempotent: registering twice neither fails nor duplicates
    assert mpl.rcParams["font.sans-serif"].count(mpl.rcParams["font.sans-serif"][0]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        good, bad, film = _render("好看"), _render("烂片"), _render("电影")
    for image in (good, bad, film):
        assert image.std() > 5  # something was drawn
    # missing glyphs would all be the same empty box ("tofu"); real glyphs differ
    assert np.abs(good - bad).sum() > 0 and np.abs(good - film).sum() > 0
