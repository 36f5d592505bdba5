"""`sandgate run`: a command in a fresh sandbox, with the running gateway (or one started for
its duration)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from gateway.cli.attached import run_in_sandbox
from gateway.cli.common import check_host, fail, load_policy, make_settings, policy_path
from gateway.cli.quick import RUNTIMES, policy_ref
from gateway.cli.serve import with_upstream
from gateway.errors import SandgateError


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
@click.option("--image", default="base", show_default=True, metavar="NAME",
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
    from gateway.home import control_socket
    from gateway.processes.launch import ControlClient, socket_accepts

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if runtime not in RUNTIMES:
        fail(f"unknown runtime {runtime!r}", "use --runtime gvisor or --runtime microvm")
    if policy is None and not learn:
        fail("--policy is missing", "pass --policy FILE|NAME, or --learn to record what the "
             "command needs")
    if learn_to is not None and not learn:
        fail("--learn-to goes with --learn")
    body = {"runtime": runtime, "image": image, "env": _parse_env(env_pairs),
            "secrets": list(secrets), **({"user": user} if user else {})}
    running = control_socket()
    if policy is not None and not learn and socket_accepts(running):
        # The running gateway checks the policy and the image itself and answers with every
        # problem; nothing here needs Settings, pydantic or the policy compiler.
        client = ControlClient(control_socket=running)
        try:
            code = run_in_sandbox(client, {**body, "policy": _policy_ref(policy)},
                                  list(cmd), shared_gateway=True)
        except SandgateError as e:
            _fail_with_lines(e, policy)
    else:
        code = _run_checked(policy, learn, learn_to, body, list(cmd), upstream_resolver,
                            upstream_ca)
    sys.exit(code if code >= 0 else 128 - code)


def _fail_with_lines(error: SandgateError, policy: str) -> NoReturn:
    """The gateway's answer, in the words the checks made here would use: a policy's
    problems one a line, as `sandgate policy check` prints them."""
    first, *problems = error.message.splitlines()
    if not problems:
        raise error
    for problem in problems:
        click.echo(f"sandgate: error: {problem}", err=True)
    fail(f"policy {policy} is invalid" if first.startswith("invalid policy") else first,
         "fix the lines above")


def _policy_ref(ref: str) -> str:
    resolved = policy_ref(ref)
    if resolved is None:
        fail(f"policy file {ref} does not exist", "pass --policy PATH to a YAML policy")
    return resolved


def _run_checked(policy: str | None, learn: bool, learn_to: Path | None,
                 body: dict[str, Any], cmd: list[str], upstream_resolver: str | None,
                 upstream_ca: str | None) -> int:
    """No gateway is running, or --learn: check everything here first (before a gateway and
    a sandbox exist), start a gateway for this command if none runs (and say so while it
    starts); with --learn, record under a monitor-mode copy of the policy and learn from the
    sandbox's requests at the end."""
    from gateway.cli.learn import learn_from_run, recording_policy
    from gateway.processes.launch import gateway
    from sandbox_net.images.base import BASE, BASE_HINT
    from sandbox_net.images.store import LIST_HINT, ImageStore

    settings = make_settings(upstream_resolver=upstream_resolver, upstream_ca=upstream_ca)
    if settings.upstream_ca is not None and not settings.upstream_ca.is_file():
        fail(f"upstream CA file {settings.upstream_ca} does not exist")
    # every problem reported now, before a sandbox exists
    base = load_policy(policy, settings) if policy else None
    check_host(settings)
    image = body["image"]
    if ImageStore(settings.images_dir).find(image) is None:   # the store is root's
        fail(f"unknown image {image!r}", BASE_HINT if image == BASE else LIST_HINT)
    recording = recording_policy(settings, base) if learn else None
    body = {**body, "policy": str(recording or policy_path(str(policy), settings))}
    created: list[str] = []
    with gateway(settings, say=_say) as client:
        code = run_in_sandbox(client, body, cmd, created=created)
    if learn and created:
        learn_from_run(settings, created[0], base, learn_to)
    return code


def _say(message: str) -> None:
    click.echo(f"sandgate: {message}", err=True)
