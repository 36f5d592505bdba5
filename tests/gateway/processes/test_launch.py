"""The control client's HTTP/1.1 over the unix socket, against a real socket server speaking
canned answers (the gateway's own API answers through it in the integration tier)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from gateway.errors import NotReady, SandgateError
from gateway.processes.launch import ControlClient


class Canned(socketserver.StreamRequestHandler):
    answer = b""
    seen: ClassVar[list[bytes]] = []

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self.rfile.read(1)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        Canned.seen.append(head + self.rfile.read(length))
        self.wfile.write(Canned.answer)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "control.sock"
    with socketserver.ThreadingUnixStreamServer(str(path), Canned) as srv:
        threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
        yield path
        srv.shutdown()


def answer(status: str, body: bytes, *fields: str) -> bytes:
    head = "".join(f"{f}\r\n" for f in fields)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def test_a_json_answer_and_the_request_sent(server: Path) -> None:
    Canned.answer = answer("201 Created", b'{"id": "s1"}', "content-length: 12")
    Canned.seen = []
    client = ControlClient(control_socket=server)
    assert client.create_sandbox(policy="p", env={"A": "b"}) == {"id": "s1"}
    request = Canned.seen[0]
    assert request.startswith(b"POST /v1/sandboxes HTTP/1.1\r\n")
    assert request.endswith(b'\r\n\r\n{"policy": "p", "env": {"A": "b"}}')


def test_an_empty_answer_and_a_delete_without_waiting(server: Path) -> None:
    Canned.answer = answer("202 Accepted", b"", "content-length: 0")
    Canned.seen = []
    ControlClient(control_socket=server).delete_sandbox("s1", wait=False)
    assert Canned.seen[0].startswith(b"DELETE /v1/sandboxes/s1?wait=false HTTP/1.1\r\n")


def test_an_error_keeps_detail_hint_and_status(server: Path) -> None:
    Canned.answer = answer("422 Unprocessable", b'{"detail": "unknown image", "hint": "list"}',
                           "Content-Length: 43")
    with pytest.raises(SandgateError) as error:
        ControlClient(control_socket=server).create_sandbox(image="nope")
    assert (error.value.message, error.value.hint, error.value.status) == (
        "unknown image", "list", 422)


@pytest.mark.parametrize("raw", [
    answer("200 OK", b'{"id"', "content-length: 12"),                  # cut short
    answer("200 OK", b"5\r\nhello\r\n0\r\n\r\n", "transfer-encoding: chunked"),
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n",                       # no end of head
    b"garbage\r\n\r\n",
])
def test_a_broken_answer_is_not_ready_never_misread(server: Path, raw: bytes) -> None:
    Canned.answer = raw
    with pytest.raises(NotReady, match="not answering"):
        ControlClient(control_socket=server).create_sandbox()


def test_nothing_listening(tmp_path: Path) -> None:
    client = ControlClient(control_socket=tmp_path / "none.sock")
    assert not client.healthy()
    with pytest.raises(NotReady):
        client.policy_status()


def test_a_gateway_started_for_a_command_destroys_its_sandboxes_when_it_stops(
        tmp_path: Path) -> None:
    """Nothing of a one-command gateway may outlive it for a later adoption: its data
    directory may be temporary (a benchmark's left runsc processes running)."""
    from gateway.processes.launch import gateway
    from gateway.settings import Settings

    # the wrapper shows the environment the gateway would get, then fails its start
    wrapper = ["sh", "-c", 'echo "destroy-on-stop=$SANDGATE_DESTROY_ON_STOP"; exit 1', "sh"]
    with pytest.raises(NotReady, match="destroy-on-stop=True"), \
            gateway(Settings(home=tmp_path / "home"), wrapper=wrapper):
        pass
