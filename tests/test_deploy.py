"""deploy/: what runs the relay for real. No container engine runs here, so the image and the
compose file are checked as documents (the compose file against the Compose Specification's
schema); the systemd unit is checked by `systemd-analyze verify` where systemd is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.core import Option

from backchannel_relay.cli import main as relay_main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RELAY_SCRIPT = Path(sys.executable).parent / "backchannel-relay"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_the_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_relays_share_one_postgresql_behind_a_tls_proxy() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "relay1", "relay2", "proxy"}
    relays = [services["relay1"], services["relay2"]]
    urls = {r["environment"]["BACKCHANNEL_RELAY_DATABASE"] for r in relays}
    assert len(urls) == 1 and next(iter(urls)).startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in next(iter(urls))
    for relay in relays:
        assert relay["command"] == ["serve"]
        assert relay["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    proxy = services["proxy"]
    assert "443:443" in proxy["ports"] and set(proxy["depends_on"]) == {"relay1", "relay2"}
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    assert "reverse_proxy relay1:8470 relay2:8470" in caddyfile
    assert "health_uri /healthz" in caddyfile and "read_timeout 0" in caddyfile


def test_the_image_runs_the_relay_unprivileged_with_a_health_check() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    instructions = [line.split()[0] for line in lines if line.split()[0].isupper()]
    assert instructions[0] == "FROM" and "HEALTHCHECK" in instructions
    assert "USER relay" in lines and 'ENTRYPOINT ["backchannel-relay"]' in lines
    for copied in ("backchannel", "server", "client"):
        assert any(line.startswith(f"COPY {copied} ") for line in lines)
    assert "BACKCHANNEL_RELAY_HOST=0.0.0.0" in (DEPLOY / "Dockerfile").read_text()


def test_every_serve_flag_can_be_set_by_an_environment_variable() -> None:
    serve = relay_main.commands["serve"]
    options = [p for p in serve.params if isinstance(p, Option) and p.name != "help"]
    missing = [o.name for o in options if not o.envvar]
    assert missing == []
    assert all(str(o.envvar).startswith("BACKCHANNEL_RELAY_") for o in options)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit as shipped, with its ExecStart pointed at this
    checkout's relay (the only change: the installed path does not exist here)."""
    unit = (DEPLOY / "backchannel-relay.service").read_text()
    assert "/opt/backchannel/.venv/bin/backchannel-relay" in unit
    local = tmp_path / "backchannel-relay.service"
    local.write_text(
        unit.replace("/opt/backchannel/.venv/bin/backchannel-relay", str(RELAY_SCRIPT))
    )
    done = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    for hardening in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ):
        assert hardening in unit  # fmt: skip
