"""Run `sandgate` in this process, as its entry point does (gateway.cli.main.main): the
same argument parsing and error handling, without a Python start-up per command. Tests
that need another user or a fresh process still run it as a subprocess."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.main import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


type Sandgate = Callable[..., Result]


@pytest.fixture
def sandgate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> Sandgate:
    """`sandgate(*args, **env)`: exit status and output of one command, with SANDGATE_HOME
    in a fresh directory unless `env` says otherwise."""
    home = tmp_path / "home"

    def run(*args: str, **env: str) -> Result:
        with monkeypatch.context() as m:
            for name in [n for n in os.environ if n.startswith("SANDGATE_")]:
                m.delenv(name)
            m.setenv("SANDGATE_HOME", str(home))
            for name, value in env.items():
                m.setenv(name, value)
            capsys.readouterr()
            try:
                main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run
