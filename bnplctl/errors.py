"""Domain exceptions and the exit codes they map to (PRODUCT.md, "Exit codes").

Messages are written for the operator and never carry raw personal data: callers
build them from field names and identifiers only.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    REFUSED = 3
    NOT_FOUND = 4
    BATCH_REJECTED = 5
    INVALID_INPUT = 65
    NO_INPUT = 66
    UNHEALTHY = 69
    UNAVAILABLE = 75
    OUTPUT_FAILED = 74  # sysexits EX_IOERR: the output could not be written
    CONFIG = 78
    INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, as shells report it
    TERMINATED = 143  # SIGTERM (kill, timeout, a service manager): 128 + 15
    BROKEN_PIPE = 141  # the reader of stdout went away: 128 + SIGPIPE, as for `seq … | head`


class BnplError(Exception):
    """Base of every error the CLI turns into a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(BnplError):
    """A business rule refuses the request (exit 3)."""

    exit_code = ExitCode.REFUSED


class Conflict(Refused):
    """The request collides with existing state: a duplicate, a reused key (exit 3)."""


class DebtUserRefused(Refused):
    """Rule 2: a DEBT_USER cannot get a new plan."""

    def __init__(self) -> None:
        super().__init__("Users with DEBT_USER status cannot create new BNPL plans")


class NotFound(BnplError):
    exit_code = ExitCode.NOT_FOUND


class InvalidInput(BnplError, ValueError):
    """A field fails validation or a file cannot be parsed (exit 65).

    Also a ``ValueError``, so pydantic validators can raise it and keep its message.
    """

    exit_code = ExitCode.INVALID_INPUT


class MissingInput(BnplError):
    """A required value was neither given nor could be asked for (exit 2, a usage error)."""

    exit_code = ExitCode.USAGE


class UsageProblem(BnplError):
    """Options that must not be used as given (exit 2): a future ``--as-of`` without
    ``--allow-future``, a rejects file that is one of the inputs."""

    exit_code = ExitCode.USAGE


class InputFileError(BnplError):
    """An input file is missing or unreadable (exit 66)."""

    exit_code = ExitCode.NO_INPUT


class Unavailable(BnplError):
    """Retry later: database unreachable, a lock held elsewhere (exit 75)."""

    exit_code = ExitCode.UNAVAILABLE


class OutputError(BnplError):
    """Stdout cannot be written: a full disk, a device error (exit 74)."""

    exit_code = ExitCode.OUTPUT_FAILED


class ConfigError(BnplError):
    """Bad configuration: URL, key file, schema not at head (exit 78)."""

    exit_code = ExitCode.CONFIG


class Terminated(BaseException):
    """SIGTERM arrived: the command stops as for Ctrl-C (what it committed stays)."""
