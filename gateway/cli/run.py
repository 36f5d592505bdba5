"""`sandgate run`: a command in a fresh sandbox, with the running gateway (or one started for
its duration)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import check_host, fail, load_policy, make_settings, policy_path
from gateway.cli.learn import learn_from_run, recording_policy
from gateway.cli.serve import with_upstream
from sandbox_net.images.base import BASE, BASE_HINT
from sandbox_net.images.store import LIST_HINT, ImageStore

RUNTIMES = ("gvisor", "microvm")


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair!r} is not KEY=VALUE", "write --env NAME=value")
        env[key] = value
    return env


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--policy", metavar="FILE|NAME",
              help="policy file (or the name of a policy in the policy directory)")
@click.option("--learn", is_flag=True,
              help="record under a monitor-mode copy of --policy (or of an empty policy) and "
                   "print the policy the command needed when it ends (policy learn)")
@click.option("--learn-to", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="with --learn: write the learned policy to FILE instead of stderr")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="environment variable for the command (repeatable)")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="give the sandbox a placeholder for vault secret NAME, in env var NAME "
                   "(repeatable); the gateway swaps in the value where a policy rule says so")
@click.option("--runtime", default="gvisor", show_default=True, help="sandbox runtime")
@click.option("--image", default=BASE, show_default=True, metavar="NAME",
              help="the sandbox's root filesystem (sandgate image list)")
@click.option("--user", default=None, metavar="USER",
              help="run as NAME, UID or UID:GID of the image (default: the image's non-root "
                   "user, else uid 1000; root only when named)")
@with_upstream
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(policy: str | None, learn: bool, learn_to: Path | None, env_pairs: tuple[str, ...],
        secrets: tuple[str, ...], runtime: str, image: str, user: str | None,
        upstream_resolver: str | None, upstream_ca: str | None, cmd: tuple[str, ...]) -> None:
    """Run CMD in a new sandbox whose only way out is the gateway; exit with its status.
    Its working directory is /workspace (or the image's WorkingDir)."""
    from gateway.processes.launch import gateway

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if runtime not in RUNTIMES:
        fail(f"unknown runtime {runtime!r}", "use --runtime gvisor or --runtime microvm")
    settings = make_settings(upstream_resolver=upstream_resolver, upstream_ca=upstream_ca)
    if settings.upstream_ca is not None and not settings.upstream_ca.is_file():
        fail(f"upstream CA file {settings.upstream_ca} does not exist")
    if policy is None and not learn:
        fail("--policy is missing", "pass --policy FILE|NAME, or --learn to record what the "
             "command needs")
    if learn_to is not None and not learn:
        fail("--learn-to goes with --learn")
    env = _parse_env(env_pairs)
    # every problem reported now, before a sandbox exists
    base = load_policy(policy, settings) if policy else None
    check_host(settings)
    if ImageStore(settings.images_dir).find(image) is None:   # the store is root's
        fail(f"unknown image {image!r}", BASE_HINT if image == BASE else LIST_HINT)
    recording = recording_policy(settings, base) if learn else None
    policy_ref = str(recording or policy_path(str(policy), settings))
    body = {"runtime": runtime, "image": image, "policy": policy_ref, "env": env,
            "secrets": list(secrets), **({"user": user} if user else {})}
    created: list[str] = []
    with gateway(settings) as client:
        code = _run_in_sandbox(client, body, list(cmd), created)
    if learn and created:
        learn_from_run(settings, created[0], base, learn_to)
    sys.exit(code if code >= 0 else 128 - code)


INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _run_in_sandbox(client: Any, body: dict[str, Any], cmd: list[str],
                    created: list[str]) -> int:
    """Create, run, delete (the sandbox's id is appended to `created`). Interrupts are held
    back while the sandbox is being created and deleted, so a Ctrl-C can never leave a
    sandbox whose id we do not know."""
    sandbox: dict[str, Any] | None = None
    attached: Attached | None = None
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        sandbox = client.create_sandbox(**body)
        created.append(sandbox["id"])
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)  # a pending Ctrl-C lands here
        attached = Attached(client.local_exec(sandbox["id"], cmd, env={}, cwd=None))
        return attached.wait()
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
        if attached is not None:
            attached.kill()
        if sandbox is not None:
            client.delete_sandbox(sandbox["id"])  # closes whatever the sandbox still held open
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
