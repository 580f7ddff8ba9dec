"""``bnplctl scheduler crontab``: a crontab for this installation, that runs under cron.

Cron gives a job an almost empty environment (``PATH=/usr/bin:/bin``, ``HOME``,
``LOGNAME``, ``SHELL=/bin/sh``) and its working directory is ``$HOME``, so the crontab
names the executable by its absolute path, carries every ``BNPL_*`` setting in force now
(paths made absolute), and lets bnplctl open its own log files (``--log-file``): a shell
redirect into a missing directory fails before bnplctl starts, and cron discards that.
A database URL with a password is never printed: the jobs read it from an env file
(``BNPL_ENV_FILE``), the one it came from, or one the operator writes.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bnplctl.config import ENV_FILE_VARIABLE, PREFIX, Settings, env_file_values
from bnplctl.errors import UsageProblem

DEFAULT_LOG_DIR = Path("/var/log/bnplctl")
DEFAULT_ENV_FILE = Path("/etc/bnplctl/bnplctl.env")
# The settings a job needs, in the order printed; BNPL_LOG_FORMAT is not one (a log file
# is JSON lines), BNPL_ACTOR is always ``cron``.
PRINTED = (
    "data_dir",
    "secret_key_file",
    "timezone",
    "grace_days",
    "sweep_at",
    "currency",
    "key_max_age_days",
)
PATH_SETTINGS = ("data_dir", "secret_key_file")
PINNED = ("timezone", "grace_days", "sweep_at")  # printed even when they are the defaults
LONGEST_COMMAND = 998  # cron refuses a longer line (1,000 characters with the newline)


@dataclass(frozen=True)
class Crontab:
    text: str
    # Where the database URL (it holds a password) must be written for the jobs to read
    # it, when it is not in that file yet; None when nothing is to be done.
    env_file_to_write: Path | None = None


def running_executable() -> str:
    """This bnplctl, as cron must call it: the console script's absolute path, or the
    interpreter with ``-m bnplctl`` when it was started that way (or is in a test)."""
    script = sys.argv[0] if sys.argv else ""
    if Path(script).name == "bnplctl" and os.access(script, os.X_OK):
        return shlex.quote(os.path.abspath(script))
    return f"{shlex.quote(sys.executable)} -m bnplctl"


def _has_password(url: str) -> bool:
    """Whether the URL carries a secret: a password, or an option naming one
    (``sslpassword``); a malformed URL is a configuration error (78), as for any job."""
    from psycopg2.extensions import parse_dsn

    from bnplctl.db import libpq_url

    return any("password" in name and value for name, value in parse_dsn(libpq_url(url)).items())


def _value(settings: Settings, name: str, given: str) -> str:
    value = getattr(settings, name, None)
    if name in PATH_SETTINGS and value is not None:
        return str(Path(value).expanduser().absolute())
    return given.strip() if value is None else str(value)


def _assignment(name: str, value: str) -> str:
    """A crontab environment line; cron takes a value as it is, up to the line's end."""
    if "\n" in value or "\r" in value:
        raise UsageProblem(f"{name} holds a line break: it cannot be written into a crontab")
    return f"{name}={value}"


def environment_lines(
    settings: Settings, given: dict[str, str], env_file: Path | None
) -> tuple[list[str], Path | None]:
    """The ``NAME=value`` lines the jobs need, and the env file the operator must still
    write (the URL's password goes there), if any."""
    lines = [
        _assignment("SHELL", "/bin/sh"),
        _assignment("PATH", "/usr/bin:/bin"),
        _assignment("CRON_TZ", settings.timezone),
        _assignment(f"{PREFIX}ACTOR", "cron"),
    ]
    to_write: Path | None = None
    url = settings.database_url
    if url is not None and _has_password(url):
        source, values = env_file_values()
        name = f"{PREFIX}DATABASE_URL"
        from_file = any(
            key.upper() == name and value.strip() == url for key, value in values.items()
        )
        target = (env_file or (source if from_file else DEFAULT_ENV_FILE)).absolute()
        lines.append(_assignment(ENV_FILE_VARIABLE, str(target)))
        if not (from_file and target == source.absolute()):
            to_write = target
    elif url is not None:
        lines.append(_assignment(f"{PREFIX}DATABASE_URL", url))
    for name in PRINTED:
        # What the job's own settings would otherwise default to is spelt out too: an
        # env file in cron's $HOME could change it.
        if name in given or name in PINNED or (name == "data_dir" and settings.embedded):
            value = _value(settings, name, given.get(name, ""))
            lines.append(_assignment(f"{PREFIX}{name.upper()}", value))
    return lines, to_write


def build(
    settings: Settings,
    given: dict[str, str],
    *,
    executable: str,
    log_dir: Path,
    env_file: Path | None = None,
) -> Crontab:
    """The crontab's text for ``executable`` with logs in ``log_dir``."""
    hour, minute = (int(part) for part in settings.sweep_at.split(":"))
    hourly = (minute + 15) % 60
    logs = log_dir.expanduser().absolute()

    def log(name: str) -> str:
        return shlex.quote(str(logs / name))

    environment, to_write = environment_lines(settings, given, env_file)
    nightly = (
        f"{minute} {hour} * * * {executable} debt sweep --log-file {log('sweep.jsonl')}"
        f" && {executable} verify --log-file {log('verify.jsonl')}"
    )
    catch_up = (
        f"{hourly} * * * * {executable} scheduler run --once --log-file {log('scheduler.jsonl')}"
    )
    if "%" in nightly + catch_up:
        raise UsageProblem("a path holds '%', which cron turns into a line break")
    if max(len(nightly), len(catch_up)) > LONGEST_COMMAND:
        raise UsageProblem("a job line would be longer than cron accepts: use shorter paths")
    header = [
        "# bnplctl's jobs, printed by `bnplctl scheduler crontab` for this installation.",
        "# Install as the user the jobs run as: bnplctl scheduler crontab > bnplctl.cron",
        "# && crontab bnplctl.cron (this replaces that user's crontab: merge by hand if",
        "# it has one).",
        "#",
        "# Nothing goes to stdout or stderr: each job appends JSON lines to its log file",
        "# (bnplctl makes the directory, mode 0750), the last line of a run with its",
        "# exit_code and, when it failed, the error as its message. 0: done; 75: another",
        "# sweep holds the lock or the database is down (the hourly line retries the",
        "# sweep); 78: configuration, or schema behind (`bnplctl db upgrade`); 69: verify",
        "# found a broken invariant (see its checks); 2: a bad option; 130, 143: stopped",
        "# by a signal; 1: a bug (--debug). Failures: jq 'select((.exit_code // 0) != 0)'.",
        "# Cron mails only a log that cannot be written (exit 74), given a mail agent.",
        "# `bnplctl status` is unhealthy (69) while the day's sweep is missing after",
        "# BNPL_SWEEP_AT: point your monitoring at it.",
        "#",
        "# CRON_TZ puts the schedule in BNPL_TIMEZONE where cron supports it (cronie);",
        "# Debian's cron ignores it and runs the lines in the host's time zone. The",
        "# business date always comes from BNPL_TIMEZONE.",
    ]
    if to_write is not None:
        header += [
            "#",
            "# BNPL_DATABASE_URL holds a password, so it is not written here: put the line",
            f"# BNPL_DATABASE_URL=... into {to_write} (mode 0600, owned by the user",
            "# the jobs run as).",
        ]
    body = [
        "",
        *environment,
        "",
        f"# {hour:02d}:{minute:02d} every night (BNPL_SWEEP_AT, in CRON_TZ): late installments"
        " OVERDUE,",
        "# their owners DEBT_USER; then rule 9's invariants, when the sweep succeeded.",
        nightly,
        "",
        "# Hourly: purge expired idempotency keys, and sweep the day when its sweep has not",
        "# succeeded yet (a 75 at night is retried here).",
        catch_up,
    ]
    return Crontab("\n".join([*header, *body]) + "\n", to_write)
