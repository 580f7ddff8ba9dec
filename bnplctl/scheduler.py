"""The long-lived scheduler: the nightly sweep and the hourly key purge, never dying of one job.

Built on ``schedule``: a check every minute runs the sweep once the day's
``BNPL_SWEEP_AT`` has passed in ``BNPL_TIMEZONE`` and the ledger has no
successful sweep for that business date; the same check at start-up catches up
a missed night. A date whose sweep an operator reverted is theirs to sweep again:
the scheduler says so once and leaves it. The idempotency-key purge runs hourly. A job that raises
(database down included) is logged and retried at its next turn. SIGTERM and
SIGINT let the running job finish, then the loop exits 0; ``--once`` keeps the CLI's
signal handling (the job stops, exit 143 or 130). Every line goes through the log, a
configuration error at start included, so a JSON log stays JSON lines.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from bnplctl import clock

if TYPE_CHECKING:
    from bnplctl.context import Context

LOGGER = logging.getLogger("bnplctl.scheduler")
LOGGER.propagate = False  # its lines go to the handler ``configure_logging`` gives it only


def event_of(record: logging.LogRecord) -> dict[str, Any]:
    """A log record as the JSON object of its line."""
    event: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created).astimezone().isoformat(),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    return event | getattr(record, "fields", {})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(event_of(record), default=str)


class LogFileHandler(logging.Handler):
    """``--log-file``: each event appended to the file as a JSON line, the file opened
    anew for each (logrotate may move it between two)."""

    def __init__(self, path: Path, stderr: TextIO) -> None:
        super().__init__()
        self.path = path
        self.stderr = stderr

    def emit(self, record: logging.LogRecord) -> None:
        from bnplctl.joblog import append_json_line

        try:
            append_json_line(self.path, event_of(record))
        except OSError as exc:  # said where cron sees it, never as logging's traceback
            reason = exc.strerror or type(exc).__name__
            self.stderr.write(f"error: cannot write the log file {self.path}: {reason}\n")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")
        fields = getattr(record, "fields", {})
        extra = "".join(f" {key}={value}" for key, value in fields.items())
        return f"{stamp} {record.levelname} {record.getMessage()}{extra}"


def configure_logging(log_format: str, stderr: TextIO, log_file: Path | None = None) -> None:
    """One line per event on ``stderr`` (JSON lines with BNPL_LOG_FORMAT=json), or appended
    to ``log_file`` as JSON lines."""
    handler: logging.Handler
    if log_file is not None:
        handler = LogFileHandler(log_file, stderr)
    else:
        handler = logging.StreamHandler(stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.INFO)


def requested_log_format() -> str:
    """BNPL_LOG_FORMAT read on its own, as Settings reads it (environment, ``.env``): a
    bad value in another setting is then logged in the format asked for, so cron's JSON
    log keeps one shape. An unusable value of its own falls back to text."""
    from bnplctl.config import LOG_FORMATS, setting_text
    from bnplctl.errors import ConfigError

    try:
        requested = (setting_text("log_format") or "text").strip().lower()
    except ConfigError:  # an unreadable BNPL_ENV_FILE: Settings says so, in this format
        return "text"
    return requested if requested in LOG_FORMATS else "text"


def log(level: int, message: str, **fields: Any) -> None:
    LOGGER.log(level, message, extra={"fields": fields})


def logged_failure(name: str, exc: BaseException) -> int:
    """Log why ``name`` stopped, in one line: a domain error's message (written for the
    operator), never another exception's text (it may quote data). Returns the exit code
    the failure has as a command (1 for a bug)."""
    from bnplctl.db import recognised_database_error
    from bnplctl.errors import BnplError, ExitCode, Terminated

    exc = recognised_database_error(exc) or exc
    if isinstance(exc, BnplError):
        code, message = exc.exit_code, f"{name} failed: {exc.message}"
    elif isinstance(exc, Terminated | KeyboardInterrupt):
        code = ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED
        message = f"{name} stopped by a signal: what it committed stays, the rest was rolled back"
    else:
        code, message = ExitCode.INTERNAL, f"{name} failed"
    log(logging.ERROR, message, job=name, error=type(exc).__name__, exit_code=int(code))
    return int(code)


def due_business_date(now: datetime, timezone: str, sweep_at: str) -> date:
    """The business date of the latest scheduled sweep slot at ``now``."""
    local = now.astimezone(ZoneInfo(timezone))
    hour, minute = (int(part) for part in sweep_at.split(":"))
    if local.time() >= time(hour, minute):
        return local.date()
    return local.date() - timedelta(days=1)


class Scheduler:
    def __init__(
        self,
        *,
        timezone: str,
        sweep_at: str,
        sweep: Callable[[date], Any],
        swept: Callable[[date], str | None],
        purge: Callable[[], int],
    ) -> None:
        import schedule

        self.timezone = timezone
        self.sweep_at = sweep_at
        self._sweep = sweep
        self._swept = swept
        self._purge = purge
        self._told_reverted: set[date] = set()
        self.stopping = threading.Event()
        self.jobs = schedule.Scheduler()
        self.jobs.every(1).minutes.do(self.guarded, "sweep", self.sweep_if_due)
        self.jobs.every(1).hours.do(self.guarded, "purge", self.purge_keys)

    def sweep_if_due(self) -> None:
        business_date = due_business_date(clock.now(), self.timezone, self.sweep_at)
        done = self._swept(business_date)
        if done == "REVERTED" and business_date not in self._told_reverted:
            # An operator undid it, likely to put something right first: theirs to redo.
            self._told_reverted.add(business_date)
            day = business_date.isoformat()
            log(
                logging.WARNING,
                f"sweep skipped: its run was reverted; `bnplctl debt sweep --as-of {day}`"
                " sweeps it again",
                business_date=day,
            )
        if done:
            return
        log(logging.INFO, "sweep starting", business_date=business_date.isoformat())
        result = self._sweep(business_date)
        log(logging.INFO, "sweep finished", **result.public())

    def purge_keys(self) -> None:
        log(logging.INFO, "idempotency keys purged", deleted=self._purge())

    def guarded(self, name: str, job: Callable[[], None]) -> int:
        """Run a job; whatever it raises is logged, and the loop goes on. Returns 0, or
        the exit code the failure would have had as a command (1 for a bug). A signal that
        interrupts it (``--once`` keeps the CLI's handlers) is logged too, and stops."""
        from bnplctl.errors import Terminated

        try:
            job()
        except (Exception, Terminated, KeyboardInterrupt) as exc:
            if not isinstance(exc, Exception):
                self.stopping.set()
            return logged_failure(name, exc)
        return 0

    def run_once(self) -> int:
        """The start-up catch-up and a purge, then return (``--once``): 0 when both
        succeeded, else the first failed job's exit code. A signal skips what is left."""
        codes: list[int] = []
        for name, job in (("sweep", self.sweep_if_due), ("purge", self.purge_keys)):
            if self.stopping.is_set():
                break
            codes.append(self.guarded(name, job))
        return next((code for code in codes if code), 0)

    def run_forever(self, poll_seconds: float = 1.0) -> None:
        self._install_signal_handlers()
        log(
            logging.INFO,
            "scheduler started",
            sweep_at=self.sweep_at,
            timezone=self.timezone,
        )
        self.run_once()
        while not self.stopping.is_set():
            self.jobs.run_pending()
            self.stopping.wait(poll_seconds)
        log(logging.INFO, "scheduler stopped")

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log(logging.INFO, "stop requested", signal=signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # The running job finishes: no statement is cancelled on a stop (``cli/app.py``).
        signal.set_wakeup_fd(-1)


def build(context: Context) -> Scheduler:
    """The scheduler wired to the real jobs and the ledger, in ``context``."""
    from bnplctl.jobs import already_swept, purge_job, sweep_job

    settings = context.settings
    return Scheduler(
        timezone=settings.timezone,
        sweep_at=settings.sweep_at,
        sweep=lambda business_date: sweep_job(
            context,
            as_of=business_date,
            dry_run=False,
            warn=lambda text: log(logging.WARNING, text),
        ),
        swept=lambda business_date: already_swept(context, business_date),
        purge=lambda: purge_job(context),
    )


def run(context: Context, *, once: bool, log_file: Path | None = None) -> int:
    """``bnplctl scheduler run``: every line it writes is a log line in BNPL_LOG_FORMAT
    (in ``log_file``: JSON), a configuration error found at start included, so cron's log
    keeps one shape. Returns the exit code: ``--once``'s first failed job's, else 0."""
    from bnplctl.errors import Terminated

    configure_logging(requested_log_format(), context.err, log_file)
    try:
        scheduler = build(context)
    except (Exception, Terminated, KeyboardInterrupt) as exc:
        return logged_failure("start", exc)
    if once:
        return scheduler.run_once()
    scheduler.run_forever()
    return 0
