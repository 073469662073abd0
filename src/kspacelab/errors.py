"""User-facing errors: one line naming the file (or argument) and the problem."""

from __future__ import annotations

from pathlib import Path


class KspacelabError(Exception):
    """An error caused by the user's input; the CLI prints ``str(err)`` and exits with status 2."""


class DataFormatError(KspacelabError):
    """A data file is missing, unreadable, or does not follow the expected layout.

    The message is ``"<path>: <problem>"`` on one line.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
