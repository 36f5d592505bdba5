"""gateway.home reads the data directory as Settings does, without building Settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.home import control_socket, home_from_env
from gateway.settings import Settings


@pytest.mark.parametrize("name", ["SANDGATE_HOME", "sandgate_home"])
def test_the_home_settings_would_choose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        name: str) -> None:
    monkeypatch.delenv("SANDGATE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "relative/home")
    assert home_from_env() == Settings().home == tmp_path / "relative" / "home"
    assert control_socket() == Settings().control_socket


def test_the_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SANDGATE_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert home_from_env() == Settings().home
