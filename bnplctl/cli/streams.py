"""Standard streams in the situations scripts and services create: a reader that goes
away, a locale that cannot encode every character. Standard library only: ``main()``
runs this before every command, ``--help`` included."""

from __future__ import annotations

import sys


def utf_capable(encoding: str | None) -> bool:
    """Whether a stream's encoding can write every character (UTF-8, -16 or -32)."""
    return (encoding or "").lower().replace("-", "").replace("_", "").startswith("utf")


def tolerate_narrow_encodings() -> None:
    """Where stdout or stderr cannot encode every character, write what it cannot as
    escapes (``\\u041c``) instead of failing the command after its work is done."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and not utf_capable(getattr(stream, "encoding", None)):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors="backslashreplace")


def silence_stdout() -> None:
    """The reader of stdout went away, or it cannot be written: what is still buffered,
    and the interpreter's flush at exit, go to /dev/null instead of failing again."""
    import os

    if sys.stdout is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
