"""The deploy/ files: the systemd unit verifies cleanly and keeps its contract."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy/systemd/lakeexportd.service"
INSTALLED_BINARY = "/opt/lakeexportd/venv/bin/lakeexportd"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, val = line.partition("=")
            settings.setdefault(key.strip(), []).append(val.strip())
    return settings


def test_systemd_analyze_verify_reports_nothing(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit (ExecStart at this venv's binary) prints nothing."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is part of this machine kind (systemd 252)"
    # verify checks that ExecStart's binary exists, so the copy points at the real one; the
    # unknown User=lakeexportd is not an error for verify (it is resolved at start).
    copy = tmp_path / "lakeexportd.service"
    binary = Path(sys.executable).with_name("lakeexportd")
    copy.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(binary)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)
    assert done.stderr == ""
    assert done.returncode == 0


def test_unit_keeps_the_operations_contract() -> None:
    """Type=notify, reload by SIGHUP, no restart on exit 78, a watchdog, its own user."""
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{INSTALLED_BINARY} run -c /etc/lakeexportd/lakeexportd.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["RestartPreventExitStatus"] == ["78"] and s["Restart"] == ["on-failure"]
    assert s["User"] == ["lakeexportd"] and s["WatchdogSec"]
    for key in ("StateDirectory", "LogsDirectory", "ProtectSystem", "NoNewPrivileges",
                "PrivateTmp", "ProtectHome", "RestrictAddressFamilies", "ReadWritePaths"):
        assert key in s, key
    assert "MemoryDenyWriteExecute" not in s  # pyarrow/polars native code needs W+X maps


def test_alert_rules_and_dashboard_parse() -> None:
    """alerts.yml is YAML with named rules; the dashboard is JSON with panels and targets."""
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert all(r["alert"] and r["expr"] for r in alerts)
    dashboard = json.loads((REPO / "deploy/grafana/lakeexportd.json").read_text())
    assert all(p["targets"] for p in dashboard["panels"])
