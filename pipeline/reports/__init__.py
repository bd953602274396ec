"""Per-film HTML reports written into reports/<run>/, and the charts the app draws the same way."""

from pipeline.reports import charts

__all__ = ["charts"]
