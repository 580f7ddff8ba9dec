"""Where a file the tool writes (``--rejects``, ``--html``) really goes.

A regular file, or a path not there yet, is written beside its target and renamed into
place, so a reader never sees half of it and an old file survives a failed run. A link is
followed first: the rename replaces the file it names, never the operator's link. A
target that exists and is not a regular file (a pipe from ``>(gzip > r.gz)``, a FIFO,
``/dev/stderr``) is written straight through: renaming onto it would replace the device
or pipe with a file of that name.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO


class OutputFile:
    """An open text file for ``path``; ``put_in_place()`` puts it there, ``abandon()``
    leaves the target as it was (for a pipe, as far as nothing was written yet)."""

    def __init__(self, path: Path, suffix: str, newline: str | None = None) -> None:
        target = path.expanduser()
        self.direct = _is_special(target)
        self.target = target if self.direct else Path(os.path.realpath(target))
        self.draft: Path | None = None
        if self.direct:
            self.handle: IO[str] = open(target, "w", newline=newline, encoding="utf-8")
        else:
            fd, draft = tempfile.mkstemp(
                dir=self.target.parent, prefix=f".{self.target.name}.", suffix=suffix
            )
            self.draft = Path(draft)
            self.handle = os.fdopen(fd, "w", newline=newline, encoding="utf-8")

    def put_in_place(self) -> None:
        """Close the file and, for a regular target, rename it into place."""
        try:
            self.handle.close()
            if self.draft is not None:
                os.chmod(self.draft, 0o644 & ~_umask())
                os.replace(self.draft, self.target)
        except OSError:
            self.abandon()
            raise

    def abandon(self) -> None:
        self.handle.close()
        if self.draft is not None:
            self.draft.unlink(missing_ok=True)


def _is_special(path: Path) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
