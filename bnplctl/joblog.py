"""``--log-file PATH``: a job's outcome appended as JSON lines to a file bnplctl opens itself.

For cron: a shell redirect into ``/var/log/bnplctl/`` fails before bnplctl starts when
the directory is missing (and cron discards the failure). Here the directory is made
(mode 0750) and the file opened (mode 0640) by the command, and every line is appended
with one ``write`` on a descriptor opened anew, so two jobs can share a file and
logrotate can move it between runs. Standard library only.

Each line is one JSON object with ``ts``, ``level`` and ``message``; the line that ends a
command adds ``command`` and ``exit_code`` (and the command's result, flattened), the
scheduler's events add their fields.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnplctl.errors import OutputError, UsageProblem

DIRECTORY_MODE = 0o750
FILE_MODE = 0o640


_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    """``record`` as one line at the end of ``path``, in a single write; a directory
    removed since the run began is made again."""
    line = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        descriptor = os.open(path, _OPEN_FLAGS, FILE_MODE)
    except FileNotFoundError:
        _make_directories(path.parent)
        descriptor = os.open(path, _OPEN_FLAGS, FILE_MODE)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def _make_directories(directory: Path) -> None:
    """``directory`` and its missing parents, each made with mode 0750 (whatever the umask)."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue  # another job made it meanwhile
        os.chmod(made, DIRECTORY_MODE)


def opened(path_text: str) -> Path:
    """The log file ``path_text``, ready to append to: missing directories made, the file
    created. A path that cannot be a log file is exit 2; one that cannot be written, 74
    (on stderr: there is no log to say it in). A FIFO without a reader is not waited for."""
    if path_text.strip() in ("", "-") or path_text.endswith("/"):
        raise UsageProblem("--log-file: a file path is needed (not '-', '' or a directory)")
    from bnplctl.outfile import refuse_unsafe_target

    path = Path(path_text).expanduser().absolute()
    refuse_unsafe_target(path, "--log-file")
    try:
        _make_directories(path.parent)
        os.close(os.open(path, _OPEN_FLAGS, FILE_MODE))
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        raise OutputError(f"cannot write the log file {path}: {reason}") from None
    return path


def timestamp() -> str:
    """Now, in the host's time zone with its offset (as the scheduler's log lines)."""
    from bnplctl import clock

    return clock.now().astimezone().isoformat()


@dataclass
class JobLog:
    """What one command run puts in its log file: its result and messages, then one line
    when it ends (``finish``)."""

    path: Path
    command: str
    result: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    error: str | None = None

    def finish(self, exit_code: int, error: str | None = None) -> None:
        """The run's line: its exit code, the error line when it failed (``error``, else
        the last one the command reported), its result."""
        error = error or (self.error if exit_code else None)
        done = f"{self.command}: exit {exit_code}" if exit_code else f"{self.command}: done"
        text = error or "; ".join(self.messages) or done
        record: dict[str, Any] = {
            "ts": timestamp(),
            "level": "error" if exit_code else "info",
            "message": text,
            "command": self.command,
            "exit_code": int(exit_code),
        }
        if error is not None and self.messages:
            record["messages"] = list(self.messages)
        record |= {key: value for key, value in self.result.items() if key not in record}
        append_json_line(self.path, record)
