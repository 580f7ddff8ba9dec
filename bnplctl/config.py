"""Settings from ``BNPL_*`` environment variables and ``.env``, built lazily on first use.

Read by hand rather than with pydantic-settings: every command reads its settings, and
importing pydantic and pydantic-settings alone took ~0.1 s of the 0.3 s a read command
may take at the terminal. The environment wins over ``.env``; names are matched in any
case, as before.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bnplctl.errors import ConfigError

PREFIX = "BNPL_"
ENV_FILE = ".env"
# Names the dotenv file to read instead of ./.env (cron's working directory is $HOME):
# where a crontab's jobs find a password they must not show (``scheduler crontab``).
ENV_FILE_VARIABLE = "BNPL_ENV_FILE"
LOG_FORMATS = ("text", "json")


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("bnplctl", appauthor=False))


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file (``export`` allowed, ``#`` comments, values in
    single quotes literal, in double quotes with ``\\n`` escapes); missing: empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return {}
    return parse_env_text(text)


def named_env_file() -> Path | None:
    """``BNPL_ENV_FILE`` (from the environment only), as an absolute path, or None."""
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    return Path(named).expanduser().absolute() if named else None


def env_file_values() -> tuple[Path, dict[str, str]]:
    """The dotenv file read under the environment, and its values: ``BNPL_ENV_FILE``,
    which must be readable (else exit 78, naming it), or ``./.env`` when there is one."""
    named = named_env_file()
    if named is None:
        return Path(ENV_FILE).absolute(), read_env_file(Path(ENV_FILE))
    try:
        return named, parse_env_text(named.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"{ENV_FILE_VARIABLE}: cannot read {named} ({reason})") from None


def parse_env_text(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of a dotenv file's text."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"')
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        values[key.strip()] = value
    return values


def given_settings() -> dict[str, str]:
    """Every ``BNPL_*`` value, keyed by its lower-case name without the prefix."""
    merged: dict[str, str] = {}
    for source in (env_file_values()[1], os.environ):
        for key, value in source.items():
            if key.upper().startswith(PREFIX):
                merged[key[len(PREFIX) :].lower()] = value
    return merged


def setting_text(name: str) -> str | None:
    """One setting's text as given (environment over ``.env``), not yet checked."""
    return given_settings().get(name)


def _blank_is_unset(value: str) -> str | None:
    return value.strip() or None


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone") from None
    return value


def _grace_days(value: str) -> int:
    try:
        days = int(value.strip())
    except ValueError:
        raise ValueError("a whole number of days, 0 to 365") from None
    if not 0 <= days <= 365:
        raise ValueError("a whole number of days, 0 to 365")
    return days


def _key_max_age_days(value: str) -> int:
    """A key's cryptoperiod in days: older, `status` asks for `keys rotate`."""
    try:
        days = int(value.strip())
    except ValueError:
        raise ValueError("a whole number of days, 1 to 3650") from None
    if not 1 <= days <= 3650:
        raise ValueError("a whole number of days, 1 to 3650")
    return days


def _clock_time(value: str) -> str:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
    if not match:
        raise ValueError("expected HH:MM (24-hour clock)")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _log_format(value: str) -> str:
    if value.strip().lower() not in LOG_FORMATS:
        raise ValueError(f"one of {', '.join(LOG_FORMATS)}")
    return value.strip().lower()


def _currency(value: str) -> str | None:
    """An ISO 4217 code (``UZS``), or unset: it labels money columns, and a processor's
    report must be in it (``payments import --preset``: other rows are ``currency``)."""
    if not value.strip():
        return None
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError("expected an ISO 4217 currency code, e.g. UZS")
    return code


def _path(value: str) -> Path:
    """A path as a person writes it in an env file: ``~`` is their home."""
    return Path(value.strip()).expanduser()


def _path_or_unset(value: str) -> Path | None:
    return _path(value) if value.strip() else None


# Each setting: how its text becomes a value (ValueError: why not).
_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "database_url": _blank_is_unset,
    "data_dir": _path,
    "secret_key_file": _path_or_unset,
    "timezone": _timezone,
    "grace_days": _grace_days,
    "sweep_at": _clock_time,
    "log_format": _log_format,
    "currency": _currency,
    "key_max_age_days": _key_max_age_days,
}


class Settings:
    """The settings of this process, read from the environment and ``.env`` when made."""

    database_url: str | None = None
    data_dir: Path
    secret_key_file: Path | None = None
    timezone: str = "UTC"
    grace_days: int = 0
    sweep_at: str = "02:00"
    log_format: str = "text"
    currency: str | None = None
    key_max_age_days: int = 365

    def __init__(self) -> None:
        given = given_settings()
        for name, parse in _PARSERS.items():
            if name not in given:
                continue
            try:
                setattr(self, name, parse(given[name]))
            except ValueError as exc:
                raise ConfigError(f"{PREFIX}{name.upper()}: {exc}") from None
        if "data_dir" not in self.__dict__:
            self.data_dir = default_data_dir()
        if self.database_url is None and named_env_file() is not None:
            # An env file is a deployment's: it names its server. Without one the jobs
            # would start an empty embedded database and report success on it.
            raise ConfigError(
                f"{ENV_FILE_VARIABLE}: {named_env_file()} sets no {PREFIX}DATABASE_URL (nor"
                " does the environment): write the line BNPL_DATABASE_URL=... there"
            )

    @property
    def key_file(self) -> Path | None:
        """Where the secret key lives: ``BNPL_SECRET_KEY_FILE``; unset, the data directory's
        ``secret.key``, for the embedded database only (the one place a key is generated).
        None: an external database without the variable, where a generated key would be
        lost with the container or machine that made it."""
        if self.secret_key_file is not None:
            return self.secret_key_file
        return self.generated_key_file if self.embedded else None

    @property
    def generated_key_file(self) -> Path:
        """Where the embedded database's key is generated (and earlier versions generated
        one under a URL too)."""
        return self.data_dir / "secret.key"

    def required_key_file(self) -> Path:
        """``key_file`` for a command that needs the key; None is a configuration error
        (78) saying how to make one, before anything is written or created."""
        if self.key_file is not None:
            return self.key_file
        hint = ""
        if self.generated_key_file.is_file():
            hint = (
                f" (a key generated earlier is at {self.generated_key_file}: if this database"
                " was set up with it, set the variable to that file)"
            )
        raise ConfigError(
            "BNPL_SECRET_KEY_FILE is not set: with BNPL_DATABASE_URL a secret key is never"
            " generated; create one with `bnplctl keys init PATH` and set"
            f" BNPL_SECRET_KEY_FILE=PATH{hint}"
        )

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def os_actor() -> str:
    """The operating-system user, the default actor of every change."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
