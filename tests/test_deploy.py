"""The shipped deployment files (``deploy/``) hold what docs/operations.md promises: the
compose file's services, volumes, key secret and healthcheck; the systemd unit's restart
policy, environment file, key credential, user and hardening. (``docker compose config``
does not run here; ``.ci/run`` also puts the unit through ``systemd-analyze verify``.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.usefixtures("no_database")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
UNIT = ROOT / "deploy" / "bnplctl-scheduler.service"
IMAGE_DATA_DIR = "/var/lib/bnplctl"  # the Dockerfile's BNPL_DATA_DIR and VOLUME


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named volume → where it is mounted (short syntax ``name:/path``)."""
    return dict(entry.split(":")[:2] for entry in service.get("volumes", []))


def test_compose_runs_postgres_a_one_shot_migration_and_the_scheduler(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"db", "migrate", "scheduler"}
    assert services["db"]["image"].startswith("postgres:")
    assert services["db"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]

    migrate, scheduler = services["migrate"], services["scheduler"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert scheduler["command"] == ["scheduler", "run"]
    assert scheduler["restart"] == "unless-stopped"
    assert scheduler["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert migrate["image"] == scheduler["image"]  # one image, built from the Dockerfile
    assert (ROOT / "deploy" / migrate["build"]["context"] / "Dockerfile").is_file()
    for service in (migrate, scheduler):
        url = service["environment"]["BNPL_DATABASE_URL"]
        assert re.fullmatch(r"postgresql://bnpl:\$\{POSTGRES_PASSWORD:\?[^}]*\}@db:5432/bnpl", url)


def test_compose_keeps_the_database_and_the_data_directory_in_volumes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(compose["volumes"]) == {"pgdata", "data"}
    assert _mounts(services["db"]) == {"pgdata": "/var/lib/postgresql/data"}
    assert _mounts(services["scheduler"]) == {"data": IMAGE_DATA_DIR}
    assert 'VOLUME ["' + IMAGE_DATA_DIR + '"]' in (ROOT / "Dockerfile").read_text()


def test_compose_hands_the_key_to_the_scheduler_only_as_a_secret(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert compose["secrets"] == {"bnpl_key": {"file": "./secrets/bnpl.key"}}
    scheduler = services["scheduler"]
    assert scheduler["secrets"] == [{"source": "bnpl_key", "target": "bnpl.key"}]
    assert scheduler["environment"]["BNPL_SECRET_KEY_FILE"] == "/run/secrets/bnpl.key"
    for name in ("db", "migrate"):  # neither needs the key
        assert "secrets" not in services[name]
        assert "BNPL_SECRET_KEY_FILE" not in services[name].get("environment", {})


def test_compose_checks_the_scheduler_s_health_with_bnplctl_status(
    compose: dict[str, Any],
) -> None:
    check = compose["services"]["scheduler"]["healthcheck"]
    assert check["test"] == ["CMD", "bnplctl", "status", "-o", "json"]
    assert {"interval", "timeout", "start_period", "retries"} <= set(check)


def _unit() -> dict[str, list[str]]:
    """Each ``Key=value`` of the unit, every value of a key given several times."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_systemd_unit_runs_the_scheduler_as_a_restarting_hardened_service() -> None:
    unit = _unit()
    assert unit["ExecStart"] == ["/opt/bnplctl/venv/bin/bnplctl scheduler run"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["78"]  # a configuration error waits for a person
    assert unit["EnvironmentFile"] == ["/etc/bnplctl/bnplctl.env"]
    assert unit["User"] not in (["root"], ["0"])
    for hardened in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert unit[hardened] == ["yes"], hardened
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["CapabilityBoundingSet"] == [""]


def test_the_systemd_unit_passes_the_key_as_a_credential() -> None:
    unit = _unit()
    (credential,) = unit["LoadCredential"]
    name, source = credential.split(":", 1)
    assert source == "/etc/bnplctl/secret.key"
    assert f"BNPL_SECRET_KEY_FILE=%d/{name}" in unit["Environment"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` needs ExecStart's binary: the unit as shipped, pointed at
    an executable that exists here. Warnings (an unknown key, a bad value) fail too."""
    shipped = UNIT.read_text()
    copy = tmp_path / UNIT.name
    copy.write_text(shipped.replace("/opt/bnplctl/venv/bin/bnplctl", "/bin/true"))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    copy.write_text(shipped.replace("ProtectSystem=", "ProtectSytem="))
    broken = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert "Unknown key" in broken.stderr  # what the check above would catch
