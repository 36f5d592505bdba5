"""`sandgate run` in its plain form against a running gateway, without click: the command
line read as click reads it, and the whole one-liner run as a process against a real Unix
socket server that answers as the gateway's control API does (a test double of the API: the
integration tier runs the real one), whose local-exec hands back a host command."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from gateway.cli.quick import parse

DEFAULTS = {"policy": "web", "runtime": "gvisor", "image": "base", "user": None, "env": [],
            "secrets": []}


@pytest.mark.parametrize(("args", "options", "command"), [
    (["--policy", "web", "--", "true"], {}, ["true"]),
    (["--policy=web", "echo", "--policy", "x"], {}, ["echo", "--policy", "x"]),
    (["--policy", "web", "--env", "A=1", "--env=B=", "--secret", "T", "--runtime",
      "microvm", "--image", "img", "--user", "0", "ls", "-l"],
     {"env": ["A=1", "B="], "secrets": ["T"], "runtime": "microvm", "image": "img",
      "user": "0"}, ["ls", "-l"]),
    (["--policy", "web", "--", "--", "x"], {}, ["--", "x"]),
])
def test_the_plain_form_is_read_as_click_reads_it(args: list[str], options: dict[str, object],
                                                  command: list[str]) -> None:
    assert parse(args) == ({**DEFAULTS, **options}, command)


@pytest.mark.parametrize("args", [
    ["--learn", "--", "true"], ["--help"], ["-h"], ["--policy", "web", "--help"],
    ["--polcy", "web", "true"], ["--policy", "web"], ["--policy", "web", "--"],
    ["--", "true"], ["true"], ["--policy"], ["--policy=", "true"],
    ["--policy", "web", "--env", "A", "true"], ["--policy", "web", "--env", "=1", "true"],
    ["--policy", "web", "--runtime", "docker", "true"],
    ["--policy", "web", "--upstream-resolver", "1.1.1.1", "true"],
])
def test_anything_else_goes_to_the_full_cli(args: list[str]) -> None:
    assert parse(args) is None


class Api(socketserver.StreamRequestHandler):
    """The control API's answers to create, local-exec and delete."""

    seen: ClassVar[list[str]] = []
    refuse = False

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = self.rfile.read(1)
            if not byte:     # a probe (launch.socket_accepts): connected, sent nothing
                return
            head += byte
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        body = json.loads(self.rfile.read(length) or b"null")
        line = head.split(b"\r\n")[0].decode()
        Api.seen.append(line)
        if line.startswith("POST /v1/sandboxes ") and Api.refuse:
            self._answer("422 Unprocessable Entity",
                         {"detail": "invalid policy web\nweb.yaml:3:5: bad glob", "hint": None})
        elif line.startswith("POST /v1/sandboxes "):
            self._answer("201 Created", {"id": "s1", "policy": body["policy"]})
        elif "/local-exec" in line:
            self._answer("200 OK", {"argv": body["cmd"]})    # the host runs it
        else:
            self._answer("202 Accepted", None)

    def _answer(self, status: str, value: object) -> None:
        body = b"" if value is None else json.dumps(value).encode()
        self.wfile.write(f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                         + body)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    Api.seen = []
    Api.refuse = False
    with socketserver.ThreadingUnixStreamServer(str(tmp_path / "control.sock"), Api) as srv:
        threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
        yield tmp_path
        srv.shutdown()


def sandgate(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDGATE_HOME": str(home)}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "gateway.cli", *args],
                          env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[3])


def imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


def test_the_one_liner_runs_without_click(home: Path) -> None:
    done = sandgate(home, "run", "--policy", "web", "--", "sh", "-c", "echo out; exit 3")
    assert (done.returncode, done.stdout) == (3, "out\n")
    assert "click" not in imported(done.stderr)
    assert Api.seen == ["POST /v1/sandboxes HTTP/1.1", "POST /v1/sandboxes/s1/local-exec HTTP/1.1",
                        "DELETE /v1/sandboxes/s1?wait=false HTTP/1.1"]


def test_a_refused_sandbox_is_answered_by_the_full_cli(home: Path) -> None:
    Api.refuse = True
    done = sandgate(home, "run", "--policy", "web", "--", "true")
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.startswith("sandgate:")] == [
        "sandgate: error: web.yaml:3:5: bad glob",
        "sandgate: error: policy web is invalid (fix the lines above)"]
    assert "click" in imported(done.stderr)
    assert Api.seen == ["POST /v1/sandboxes HTTP/1.1"] * 2    # asked again by the full CLI
