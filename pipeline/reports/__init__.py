"""Per-film HTML reports written into reports/<run>/."""
