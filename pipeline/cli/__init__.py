"""`douban`: one subcommand per stage. Each command only maps flags onto Settings and calls the
stage function; all behaviour lives in the stage modules. ``base`` holds what every command
shares, ``stages`` the commands that write a run, ``reading`` those that read one.

Contracts every command keeps: data (scores, tables) goes to stdout, everything else (progress,
summaries, logs, errors) to stderr; a :class:`~pipeline.errors.DoubanError` is caught once, in
``base._Commands``, and printed as one line with a non-zero exit (the traceback only with
``-v``); user text (reviews, film and run names) reaches the terminal as plain text, with
control characters escaped, never as Rich markup.
"""

from pipeline.cli import stages  # noqa: F401, I001  (registers the commands in journey order)
from pipeline.cli import reading  # noqa: F401
from pipeline.cli.base import app

__all__ = ["app"]
