"""The systemd unit (checked by systemd-analyze), the install script (staged into a
directory), and the container recipe (what it copies exists; it runs what the unit runs)."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "sandgate.service"


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    venv = Path(sys.executable).parent.parent
    result = subprocess.run([str(REPO / "deploy/systemd/install.sh"), "--root", str(root),
                             "--venv", str(venv)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return root


def test_install_stages_unit_settings_and_policies(staged: Path) -> None:
    env = staged / "etc/sandgate/sandgate.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600           # may come to hold a URL
    assert stat.S_IMODE((staged / "var/lib/sandgate").stat().st_mode) == 0o700
    assert (staged / "etc/systemd/system/sandgate.service").read_text() == UNIT.read_text()
    assert (staged / "var/lib/sandgate/policies/default.yaml").exists()
    assert (staged / "opt/sandgate/venv/bin/sandgate").exists()
    settings = dict(line.split("=", 1) for line in env.read_text().splitlines()
                    if line and not line.startswith("#"))
    assert settings["SANDGATE_HOME"] == "/var/lib/sandgate"


def test_a_second_install_keeps_the_settings(staged: Path) -> None:
    env = staged / "etc/sandgate/sandgate.env"
    env.write_text(env.read_text() + "SANDGATE_WORKERS=3\n")
    result = subprocess.run([str(REPO / "deploy/systemd/install.sh"), "--root", str(staged),
                             "--venv", str(Path(sys.executable).parent.parent)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SANDGATE_WORKERS=3" in env.read_text()


def test_systemd_analyze_verify_finds_nothing(staged: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by scripts/bootstrap.sh (systemd package)"
    # the unit as installed, its ExecStart pointed into the staged tree
    unit = tmp_path / "sandgate.service"
    unit.write_text(UNIT.read_text().replace("/opt/sandgate", str(staged / "opt/sandgate")))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("NoNewPrivileges", "NoNewPrivilegez"))
    result = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True,
                            timeout=60)
    assert "Unknown key" in result.stderr   # the check above can fail


def test_the_unit_is_hardened() -> None:
    text = UNIT.read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "ProtectKernelModules=yes"):
        assert line in text
    caps = set(re.findall(r"CAP_[A-Z_]+", text.split("CapabilityBoundingSet=", 1)[1]
                          .split("\nAmbient", 1)[0]))
    assert not caps & {"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_SYS_TIME",
                       "CAP_BPF", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_SYSLOG"}
    assert "ReadWritePaths=/var/lib/sandgate" in text


def test_the_container_recipe_copies_what_exists_and_runs_the_cli() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert lines[0].startswith("FROM python:3.12")
    for line in lines:
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f"{line}: {source} missing"
    assert 'ENTRYPOINT ["sandgate"]' in lines and 'CMD ["serve"]' in lines
    assert "runsc" in dockerfile and "nftables" in dockerfile
