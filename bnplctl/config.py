"""Settings from ``BNPL_*`` environment variables and ``.env``, built lazily on first use."""

from __future__ import annotations

import getpass
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bnplctl.errors import ConfigError


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("bnplctl", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BNPL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    database_url: str | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
    secret_key_file: Path | None = None
    timezone: str = "UTC"
    grace_days: int = Field(default=0, ge=0, le=365)
    sweep_at: str = "02:00"
    log_format: Literal["text", "json"] = "text"
    currency: str | None = None

    @field_validator("database_url")
    @classmethod
    def _blank_url_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, value: str | None) -> str | None:
        """An ISO 4217 code (``UZS``), or unset; it only labels money columns."""
        if value is None or not value.strip():
            return None
        code = value.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise ValueError("expected an ISO 4217 currency code, e.g. UZS")
        return code

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value

    @field_validator("sweep_at")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
        if not match:
            raise ValueError("expected HH:MM (24-hour clock)")
        return f"{int(match.group(1)):02d}:{match.group(2)}"

    @property
    def key_file(self) -> Path:
        """Where the secret key lives: ``BNPL_SECRET_KEY_FILE`` or the data directory."""
        return self.secret_key_file or self.data_dir / "secret.key"

    @property
    def embedded(self) -> bool:
        return self.database_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; a bad value is a configuration error (exit 78)."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"BNPL_{field.upper()}: {first['msg']}") from None


def os_actor() -> str:
    """The operating-system user, the default actor of every change."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
