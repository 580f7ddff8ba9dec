"""Settings from the environment and .env, with clear errors (exit 78)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnplctl.config import Settings
from bnplctl.errors import ConfigError

pytestmark = pytest.mark.usefixtures("no_database")


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BNPL_DATA_DIR")
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    settings = Settings()

    assert settings.database_url is None and settings.embedded
    assert settings.timezone == "UTC"
    assert (settings.grace_days, settings.sweep_at, settings.log_format) == (0, "02:00", "text")
    assert settings.data_dir.name == "bnplctl"
    assert settings.key_file == settings.data_dir / "secret.key"


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BNPL_TIMEZONE=Asia/Tashkent\nBNPL_GRACE_DAYS=3\n")
    monkeypatch.setenv("BNPL_SWEEP_AT", "3:05")
    monkeypatch.setenv("BNPL_DATABASE_URL", "  ")
    settings = Settings()

    assert (settings.timezone, settings.grace_days, settings.sweep_at) == (
        "Asia/Tashkent",
        3,
        "03:05",
    )
    assert settings.database_url is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BNPL_TIMEZONE", "Mars/Olympus", "BNPL_TIMEZONE: unknown time zone"),
        ("BNPL_SWEEP_AT", "25:00", "BNPL_SWEEP_AT: expected HH:MM"),
        ("BNPL_GRACE_DAYS", "-1", "BNPL_GRACE_DAYS: "),
        ("BNPL_LOG_FORMAT", "xml", "BNPL_LOG_FORMAT: "),
    ],
)
def test_bad_values_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert caught.value.message.startswith(message)
    assert caught.value.exit_code == 78
