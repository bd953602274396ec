"""The package version, at the bottom of the layers so any module may name it (the package root
imports every layer lazily; importing it from below would run back up)."""

__version__ = "0.1.0"
