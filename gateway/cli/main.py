"""The `sandgate` command. Every error a user can fix is one line on stderr and exit status 2;
never a traceback."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import click

from gateway.cli.audit import audit_group
from gateway.cli.common import (
    EXIT_USAGE,
    fail,
    load_policy,
    make_settings,
    policy_path,
)
from gateway.cli.policy import policy_group
from gateway.cli.secret import secret_group, vault_group
from gateway.cli.token import token_group
from gateway.errors import BadRequest, NotReady, SandgateError
from gateway.settings import Settings
from vault.crypto import VaultError

RUNTIMES = ("gvisor", "microvm")


upstream_options = [
    click.option("--upstream-resolver", metavar="IP",
                 help="DNS server the gateway resolves allowed names with "
                      "(default: the system's; env SANDGATE_UPSTREAM_RESOLVER)"),
    click.option("--upstream-ca", metavar="FILE", type=click.Path(dir_okay=False),
                 help="CA bundle the gateway trusts for upstream TLS "
                      "(env SANDGATE_UPSTREAM_CA)"),
]


def with_upstream[F: Callable[..., Any]](f: F) -> F:
    for option in reversed(upstream_options):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """sandgate: a deny-first egress and credential gateway for sandboxes."""


@cli.command()
@click.option("--host", "api_host", metavar="ADDRESS",
              help="control API address (default 127.0.0.1; env SANDGATE_API_HOST)")
@click.option("--port", "api_port", type=int, metavar="PORT",
              help="control API port (default 8700; env SANDGATE_API_PORT)")
@with_upstream
def serve(api_host: str | None, api_port: int | None, upstream_resolver: str | None,
          upstream_ca: str | None) -> None:
    """Run the gateway and the control API until interrupted."""
    import asyncio

    from gateway.processes import serve as server

    settings = make_settings(upstream_resolver=upstream_resolver, upstream_ca=upstream_ca,
                             api_host=api_host, api_port=api_port)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)  # a line per connection otherwise
    click.echo(f"sandgate: data in {settings.home}, policies from {settings.policy_dir}, "
               f"control socket {settings.control_socket}, API http://{settings.api_host}:"
               f"{settings.api_port} (audit view /audit)", err=True)
    asyncio.run(server.serve(settings))


@cli.command("api")
@click.option("--host", "api_host", metavar="ADDRESS",
              help="address (default 127.0.0.1; env SANDGATE_API_HOST)")
@click.option("--port", "api_port", type=int, metavar="PORT",
              help="port (default 8700; env SANDGATE_API_PORT)")
def api_command(api_host: str | None, api_port: int | None) -> None:
    """Run the control API alone (policies, secrets, audit) on the shared database: the
    central API of a cluster whose nodes run `sandgate serve`."""
    import asyncio

    from gateway.processes import api_only as control_plane

    settings = make_settings(api_host=api_host, api_port=api_port)
    problem = control_plane.check_settings(settings)
    if problem:
        fail(problem)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"sandgate api: http://{settings.api_host}:{settings.api_port}, policies "
               f"mirrored in {settings.policy_dir}", err=True)
    asyncio.run(control_plane.serve_api(settings))


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair!r} is not KEY=VALUE", "write --env NAME=value")
        env[key] = value
    return env


def _check_host(settings: Settings, command: str = "sandgate run") -> None:
    if os.geteuid() != 0:
        fail(f"{command} must run as root (it creates namespaces and nftables rules)",
             "run it with sudo")
    from sandbox_net.errors import RuntimeFailure
    from sandbox_net.runtime.gvisor import GVisorRuntime

    try:
        GVisorRuntime(settings.runsc_dir).preflight()
    except RuntimeFailure as e:
        fail(str(e))


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--policy", required=True, metavar="FILE|NAME",
              help="policy file (or the name of a policy in the policy directory)")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="environment variable for the command (repeatable)")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="give the sandbox a placeholder for vault secret NAME, in env var NAME "
                   "(repeatable); the gateway swaps in the value where a policy rule says so")
@click.option("--runtime", default="gvisor", show_default=True, help="sandbox runtime")
@with_upstream
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(policy: str, env_pairs: tuple[str, ...], secrets: tuple[str, ...], runtime: str,
        upstream_resolver: str | None, upstream_ca: str | None, cmd: tuple[str, ...]) -> None:
    """Run CMD in a new sandbox whose only way out is the gateway; exit with its status."""
    from gateway.processes.launch import gateway

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if runtime not in RUNTIMES:
        fail(f"unknown runtime {runtime!r}", "use --runtime gvisor or --runtime microvm")
    settings = make_settings(upstream_resolver=upstream_resolver, upstream_ca=upstream_ca)
    if settings.upstream_ca is not None and not settings.upstream_ca.is_file():
        fail(f"upstream CA file {settings.upstream_ca} does not exist")
    env = _parse_env(env_pairs)
    _check_host(settings)
    load_policy(policy, settings)  # every problem reported now, before a sandbox exists
    policy_ref = str(policy_path(policy, settings))
    with gateway(settings) as client:
        code = _run_in_sandbox(client, runtime, policy_ref, env, list(secrets), list(cmd))
    sys.exit(code if code >= 0 else 128 - code)


@cli.command()
@click.option("--policy", required=True, metavar="FILE|NAME",
              help="the policy to check (a file, or a name in the policy directory)")
def selftest(policy: str) -> None:
    """Attack your policy from a real sandbox in a throw-away world of its own.

    Builds its own namespaces, internet (DNS and web servers for the policy's names, traps on
    private and metadata addresses) and gateway; no packet leaves the machine and a running
    gateway is not touched. Prints a line per check; exits 0 when all pass, 1 otherwise."""
    from gateway.selftest.run import selftest as run_selftest

    settings = make_settings()
    _check_host(settings, "sandgate selftest")
    compiled = load_policy(policy, settings)
    if not run_selftest(compiled, policy_path(policy, settings), click.echo):
        sys.exit(1)


INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _run_in_sandbox(client: Any, runtime: str, policy: str, env: dict[str, str],
                    secrets: list[str], cmd: list[str]) -> int:
    """Create, run, delete. Interrupts are held back while the sandbox is being created and
    deleted, so a Ctrl-C can never leave a sandbox whose id we do not know."""
    sandbox: dict[str, Any] | None = None
    attached: Attached | None = None
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        sandbox = client.create_sandbox(runtime=runtime, policy=policy, env=env,
                                        secrets=secrets)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)  # a pending Ctrl-C lands here
        attached = Attached(client.local_exec(sandbox["id"], cmd, env={}, cwd="/tmp"))
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


cli.add_command(audit_group)
cli.add_command(token_group)
cli.add_command(policy_group)
cli.add_command(secret_group)
cli.add_command(vault_group)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"sandgate: error: {e.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except (BadRequest, NotReady, SandgateError) as e:
        fail(e.message, e.hint)
    except VaultError as e:
        fail(str(e))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
