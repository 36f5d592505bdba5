"""A command in a sandbox, its output relayed as it comes: what `sandgate run` does once it
knows its gateway (gateway.cli.run, gateway.cli.quick). Standard library only: the one-liner
against a running gateway imports no click."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def run_in_sandbox(client: Any, body: dict[str, Any], cmd: list[str],
                    shared_gateway: bool = False, created: list[str] | None = None) -> int:
    """Create, run, delete (the sandbox's id is appended to `created`). Interrupts are held
    back while the sandbox is being created and deleted, so a Ctrl-C can never leave a
    sandbox whose id we do not know.

    Once the command has ended by itself on a `shared_gateway` (one that stays running), the
    gateway is asked to tear the sandbox down after answering: we need not wait for it. On
    an interrupt or an error, and on a gateway of our own, we wait until it is gone."""
    sandbox: dict[str, Any] | None = None
    attached: Attached | None = None
    ended = False
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        sandbox = client.create_sandbox(**body)
        if created is not None:
            created.append(sandbox["id"])
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)  # a pending Ctrl-C lands here
        attached = Attached(client.local_exec(sandbox["id"], cmd, env={}, cwd=None))
        code = attached.wait()
        ended = True
        return code
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
        if attached is not None:
            attached.kill()
        if sandbox is not None:
            # closes whatever the sandbox still held open (the relays below wait for its
            # copies of the pipes)
            client.delete_sandbox(sandbox["id"], wait=not (ended and shared_gateway))
        if attached is not None:
            attached.drain()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


class Attached:
    """A host command whose output is relayed through pipes as it comes.

    Pipes, not our own descriptors: gVisor writes a donated regular file at offsets it tracks
    itself from 0, so `sandgate run ... >> log` would overwrite the log's beginning. The
    sandbox holds its own copies of the pipes, so the relays end when the sandbox does."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.relays = [
            threading.Thread(target=_relay, args=(self.process.stdout, sys.stdout.buffer),
                             daemon=True),
            threading.Thread(target=_relay, args=(self.process.stderr, sys.stderr.buffer),
                             daemon=True),
        ]
        for relay in self.relays:
            relay.start()

    def wait(self) -> int:
        code = self.process.wait()
        for relay in self.relays:
            # gVisor may hold its copies of the pipes a moment longer; whatever is still in
            # flight is collected by drain(), once the sandbox is gone.
            relay.join(timeout=0.05)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def drain(self) -> None:
        for relay in self.relays:
            relay.join(timeout=5)


def _relay(source: Any, sink: Any) -> None:
    with source:
        for chunk in iter(lambda: os.read(source.fileno(), 65536), b""):
            sink.write(chunk)
            sink.flush()
