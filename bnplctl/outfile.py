"""Where a file the tool writes (``--rejects``, ``--html``) really goes.

A regular file, or a path not there yet, is written beside its target and renamed into
place, so a reader never sees half of it and an old file survives a failed run; a file
that was there keeps its permissions. A link is followed first: the rename replaces the
file it names, never the operator's link. One of the process's own descriptors
(``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``, or a link to one)
is written through that descriptor: opening it anew would truncate a file the shell
appends to (``2>>cron.log``), and renaming onto it would replace that file. Any other
target that is not a regular file (a FIFO, the pipe of ``>(gzip > r.gz)``, a device) is
written straight through. A path ending in ``/`` names a directory, and a link loop
names nothing: both fail as the system would (an ``OSError``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import IO

# /proc/<pid>/fd/N or /proc/<pid>/task/<tid>/fd/N, once /proc/self, /proc/thread-self
# and /dev/fd (links) are followed.
_DESCRIPTOR = re.compile(r"^/proc/(?P<pid>\d+)(?:/task/\d+)?/fd/(?P<fd>\d+)$")
_MAX_LINKS = 40


class OutputFile:
    """An open text file for ``path``; ``put_in_place()`` puts it there, ``abandon()``
    leaves the target as it was (for a pipe, as far as nothing was written yet)."""

    def __init__(self, name: str | Path, suffix: str, newline: str | None = None) -> None:
        if str(name).endswith("/") or os.path.basename(str(name)) in (".", ".."):
            # as a string: a Path drops a trailing slash and a final "."
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(name))
        target = Path(name).expanduser()
        self.draft: Path | None = None
        self.mode = 0o644 & ~_umask()
        descriptor = _own_descriptor(target)
        if descriptor is not None:
            self.handle: IO[str] = os.fdopen(
                os.dup(descriptor), "w", newline=newline, encoding="utf-8"
            )
            return
        existing = _stat(target)  # follows links; a loop raises (ELOOP)
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            self.handle = open(target, "w", newline=newline, encoding="utf-8")
            return
        if existing is not None:
            self.mode = stat.S_IMODE(existing.st_mode)
        self.target = Path(os.path.realpath(target))
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
                os.chmod(self.draft, self.mode)
                os.replace(self.draft, self.target)
        except OSError:
            self.abandon()
            raise

    def abandon(self) -> None:
        with suppress(OSError):  # a closed pipe or a full disk fails the last flush too
            self.handle.close()
        if self.draft is not None:
            self.draft.unlink(missing_ok=True)


def _own_descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names, if any: its links are
    followed one component at a time (``/dev/stderr``, ``/dev/fd``, ``/proc/self``,
    ``/proc/thread-self`` and any link of the operator's to them), stopping at
    ``/proc/<pid>[/task/<tid>]/fd/N`` before that last, magic link is followed."""
    pending = list(Path(os.path.abspath(path)).parts[1:])
    current = "/"
    followed = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if not pending:
            named = _DESCRIPTOR.match(candidate)
            if named is not None:
                mine = int(named.group("pid")) == os.getpid()
                return int(named.group("fd")) if mine else None
        try:
            link = os.readlink(candidate)
        except OSError:  # not a link, or not there
            current = candidate
            continue
        followed += 1
        if followed > _MAX_LINKS:
            return None
        target = Path(link)
        if target.is_absolute():
            current = "/"
            pending = list(target.parts[1:]) + pending
        else:
            pending = list(target.parts) + pending
    return None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
