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

Some paths are never an output (``refuse_unsafe_target``, exit 2, before anything is
written): the secret key and the env files, by any name (device and inode), and a path
through a link that another user planted in a sticky world-writable directory (``/tmp``):
such a link is not followed, the rule of the kernel's ``fs.protected_symlinks``, applied
whatever the system's setting and to root too.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO

from bnplctl.errors import UsageProblem

# /proc/<pid>/fd/N or /proc/<pid>/task/<tid>/fd/N, once /proc/self, /proc/thread-self
# and /dev/fd (links) are followed.
_DESCRIPTOR = re.compile(r"^/proc/(?P<pid>\d+)(?:/task/\d+)?/fd/(?P<fd>\d+)$")
_MAX_LINKS = 40


class OutputFile:
    """An open text file for ``path``; ``put_in_place()`` puts it there, ``abandon()``
    leaves the target as it was (for a pipe, as far as nothing was written yet)."""

    def __init__(
        self, name: str | Path, suffix: str, newline: str | None = None, *, option: str
    ) -> None:
        if str(name).endswith("/") or os.path.basename(str(name)) in (".", ".."):
            # as a string: a Path drops a trailing slash and a final "."
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(name))
        target = Path(name).expanduser()
        refuse_unsafe_target(target, option)
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
            self.mode = existing.st_mode & 0o777  # never a setuid, setgid or sticky bit
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


def _walk(path: Path) -> Iterator[tuple[str, str, bool]]:
    """Each component on the way to ``path``, links followed one at a time as the kernel
    follows them: ``(directory, candidate, last)``, given before ``candidate`` (if a
    link) is followed, so that a caller may stop there. Ends after ``_MAX_LINKS``."""
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
        yield current, candidate, not pending
        try:
            link = os.readlink(candidate)
        except OSError:  # not a link, or not there
            current = candidate
            continue
        followed += 1
        if followed > _MAX_LINKS:
            return
        target = Path(link)
        if target.is_absolute():
            current = "/"
            pending = list(target.parts[1:]) + pending
        else:
            pending = list(target.parts) + pending


def _own_descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names, if any: its links are
    followed one component at a time (``/dev/stderr``, ``/dev/fd``, ``/proc/self``,
    ``/proc/thread-self`` and any link of the operator's to them), stopping at
    ``/proc/<pid>[/task/<tid>]/fd/N`` before that last, magic link is followed."""
    for _, candidate, last in _walk(path):
        named = _DESCRIPTOR.match(candidate) if last else None
        if named is not None:
            return int(named.group("fd")) if int(named.group("pid")) == os.getpid() else None
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


def refuse_unsafe_target(path: Path, option: str) -> None:
    """A usage error (exit 2) when ``path`` may not be written by ``option``: it is the
    secret key or an env file, or it goes through a link planted in a sticky directory."""
    if any(_same_file(path, protected) for protected in protected_files()):
        raise UsageProblem(
            f"{option} {path}: that is the secret key or an env file, which are never an output"
        )
    planted = _planted_link(path)
    if planted is not None:
        raise UsageProblem(
            f"{option} {path}: {planted} is a link another user made in a sticky"
            " world-writable directory; it is not followed (choose another path)"
        )


def protected_files() -> list[Path]:
    """The files no command writes: the secret key (where the settings put it, and where
    the embedded database's is generated) and the env files, read from the raw settings
    so that a bad value elsewhere (itself reported) does not lift the guard."""
    from bnplctl.config import ENV_FILE, PREFIX, default_data_dir, given_settings, named_env_file
    from bnplctl.errors import ConfigError

    try:
        given = given_settings()
    except ConfigError:  # an unreadable BNPL_ENV_FILE: the environment alone
        given = {
            key[len(PREFIX) :].lower(): value
            for key, value in os.environ.items()
            if key.upper().startswith(PREFIX)
        }
    protected = [Path(ENV_FILE)]
    named = named_env_file()
    if named is not None:
        protected.append(named)
    key_file = given.get("secret_key_file", "").strip()
    if key_file:
        protected.append(Path(key_file).expanduser())
    data_dir = given.get("data_dir", "").strip()
    protected.append(
        (Path(data_dir).expanduser() if data_dir else default_data_dir()) / "secret.key"
    )
    return protected


def _same_file(path: Path, other: Path) -> bool:
    """The same file, by any name: a symbolic or a hard link included."""
    try:
        mine, theirs = path.stat(), other.stat()
    except OSError:
        return os.path.realpath(path) == os.path.realpath(other)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _planted_link(path: Path) -> str | None:
    """The first link on the way to ``path`` that the kernel's ``protected_symlinks``
    would not follow: in a sticky world-writable directory, owned neither by this
    process's user nor by the directory's owner."""
    for directory_path, candidate, _ in _walk(path):
        try:
            link = os.lstat(candidate)
            if not stat.S_ISLNK(link.st_mode):
                continue
            directory = os.stat(directory_path)
        except OSError:  # not there (yet): nothing further to follow
            return None
        sticky_shared = directory.st_mode & stat.S_ISVTX and directory.st_mode & stat.S_IWOTH
        if sticky_shared and link.st_uid not in (os.geteuid(), directory.st_uid):
            return candidate
    return None
