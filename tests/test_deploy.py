"""The deployment files: the systemd unit verifies, the container runs non-root with a health
check, compose wires the service to PostgreSQL, and the docs list every setting."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "aggregator.service"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def test_unit_is_hardened() -> None:
    s = _unit_settings()
    assert s["User"] == ["aggregator"]
    assert s["StateDirectory"] == ["aggregator"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
    }.items():
        assert s[key] == [value], key
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["ExecStart"][0].endswith("aggregator run")
    assert s["CapabilityBoundingSet"] == [""]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's entry point.
    exe = Path(sys.executable).with_name("aggregator")
    if not exe.exists():
        pytest.skip(f"no aggregator entry point next to {sys.executable}")
    unit = tmp_path / "aggregator.service"
    unit.write_text(UNIT.read_text().replace("/opt/aggregator/bin/aggregator", str(exe)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_security_exposure_is_low(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("aggregator")
    unit = tmp_path / "aggregator.service"
    unit.write_text(UNIT.read_text().replace("/opt/aggregator/bin/aggregator", str(exe)))
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and "offline" in proc.stderr:
        pytest.skip("this systemd-analyze has no --offline security check")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0  # systemd calls < 2 "OK"


def test_dockerfile_is_slim_non_root_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f.endswith("-slim") or " AS " in f for f in froms)
    assert froms[-1].endswith("-slim")
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert re.search(r'^VOLUME \["/data"\]', text, re.M)
    assert "AGGREGATOR_DATA_DIR=/data" in text
    assert re.search(r'^CMD \["aggregator", "run"\]', text, re.M)


def test_compose_runs_the_service_on_postgresql() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"aggregator", "postgres"}
    app = services["aggregator"]
    assert app["environment"]["AGGREGATOR_DB"].startswith("postgresql+psycopg://")
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "healthcheck" in services["postgres"]
    assert any(str(v).endswith(":/data") for v in app["volumes"])
    # What the comment at the top promises: two replicas, each with a published port.
    assert app["deploy"]["replicas"] == 2
    low, _, high = app["ports"][0].split(":")[1].partition("-")
    assert int(high or low) - int(low) + 1 >= app["deploy"]["replicas"]


def test_compose_requires_a_postgresql_password() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    # ${VAR:?message}: compose refuses to start when it is unset or empty; no default anywhere.
    uses = re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert len(uses) == 2 and all(u.startswith(":?") for u in uses), uses
    assert "change-me" not in text


def test_environment_matches_the_tested_constraints() -> None:
    """constraints.txt is what the suite passes with: scripts/test.sh installs with it."""
    from importlib.metadata import PackageNotFoundError, version

    pins = [
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins and all(len(p) == 2 for p in pins)
    wrong = []
    for name, pinned in pins:
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong.append(f"{name}: pinned {pinned}, installed {installed}")
    assert not wrong, wrong


def test_distribution_name_is_not_the_unrelated_aggregator_on_the_index() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "news-developments"
    assert project["scripts"] == {"aggregator": "aggregator.cli:main"}
    docs = [ROOT / "README.md", DEPLOY / "aggregator.service", *(ROOT / "docs").glob("*.md")]
    for path in docs:
        assert "install 'aggregator[" not in path.read_text(), path


def test_operations_doc_lists_every_environment_variable() -> None:
    used: set[str] = set()
    for path in (ROOT / "aggregator").rglob("*.py"):
        used.update(re.findall(r"AGGREGATOR_[A-Z_]+[A-Z]", path.read_text(encoding="utf-8")))
    assert "AGGREGATOR_DB" in used
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = sorted(v for v in used if v not in doc)
    assert not missing, f"docs/operations.md does not document {missing}"
