"""One error hierarchy: every problem a user can fix is a :class:`DoubanError` that says what
went wrong and what to do next. The CLI catches it once and prints one line (no traceback
unless ``-v``); the service turns it into a 4xx answer; the app shows it as plain text.
"""

from __future__ import annotations


class DoubanError(Exception):
    """A problem the user can fix. ``hint`` is the next step (a command to run, a flag to use);
    ``exit_code`` is what the CLI exits with (1; 2 for bad input, like a usage error)."""

    hint: str = ""
    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(DoubanError, ValueError):
    """An input file, column, option value or text that cannot be used as given."""

    exit_code = 2


class InputNotFoundError(InputError, FileNotFoundError):
    """A file or folder the user named (input, config, dictionary) does not exist."""


class RunNameError(InputError):
    """A run (or film) name that is not one plain path segment."""

    hint = "use a plain name such as `dmsc`; reach runs elsewhere with --runs-dir"


class RunNotFoundError(DoubanError, FileNotFoundError):
    """The named run does not exist (the message lists the runs there are)."""


class StageMissingError(DoubanError, FileNotFoundError):
    """A stage needs an artifact an earlier stage has not written yet."""


class StaleArtifactError(DoubanError, ValueError):
    """An artifact was produced from other settings, encoder or data than the ones asked for."""


class CorruptArtifactError(DoubanError, ValueError):
    """An artifact exists but cannot be read (truncated, wrong shape, missing keys). A
    ValueError too: callers that guard a read with ``except ValueError`` keep working."""


class ModelNotFoundError(DoubanError, KeyError):
    """The named model is not in the run."""

    def __str__(self) -> str:  # KeyError would quote the message
        return DoubanError.__str__(self)


class FilmNotFoundError(DoubanError, KeyError):
    """The named film is not in the run."""

    def __str__(self) -> str:
        return DoubanError.__str__(self)


class EncoderNotAvailable(DoubanError):
    """The encoder cannot be loaded here (no hub access, missing files, unknown name)."""


class RunBusyError(DoubanError):
    """Another process is writing the run (one writer per run: see ``pipeline.locking``)."""

    hint = "wait for it to finish, or stop it, then run this again"


class DatasetError(InputError):
    """The input cannot be ingested as it is (missing columns, no usable rows, bad path, an
    encoding it is not in)."""
