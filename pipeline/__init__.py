"""Douban sentiment studio: the importable pipeline.

``pipeline.score(texts)`` scores reviews with the latest trained run; the stage functions live in
one module per stage (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["score", "__version__"]


def score(texts: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Score review texts with a trained run (see :func:`pipeline.predict.scorer.score`)."""
    from pipeline.predict.scorer import score as _score

    return _score(texts, **kwargs)
