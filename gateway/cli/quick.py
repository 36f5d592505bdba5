"""The `sandgate` command's entry point. `sandgate run` against a running gateway, in its
plain form (the options below, then the command), starts here without importing click,
whose import was a third of the one-liner's own start; everything else, and every error
before a sandbox exists, goes to the full CLI (gateway.cli.main), which parses the command
line with click and answers with its help and its one-line errors."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

RUNTIMES = ("gvisor", "microvm")
# `sandgate run`'s options the plain form may use (gateway.cli.run), each with a value
VALUED = {"--policy": "policy", "--runtime": "runtime", "--image": "image", "--user": "user",
          "--env": "env", "--secret": "secrets"}
REPEATED = frozenset({"env", "secrets"})


def parse(args: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    """The options and the command of `sandgate run ARGS` as click reads them (options
    first, `--` or the first other word starts the command), or None for anything but the
    plain form: an option it does not know (`--learn`, `--help`, a misspelling), an empty
    value, a KEY=VALUE without `=`, no --policy, no command."""
    options: dict[str, Any] = {"policy": None, "runtime": "gvisor", "image": "base",
                               "user": None, "env": [], "secrets": []}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--":
            i += 1
            break
        name, equals, value = args[i].partition("=")
        key = VALUED.get(name)
        if key is None:
            return None
        if not equals:
            i += 1
            if i == len(args):
                return None
            value = args[i]
        pair = value.partition("=")
        if not value or (key == "env" and not (pair[0] and pair[1])):
            return None
        if key in REPEATED:
            options[key].append(value)
        else:
            options[key] = value
        i += 1
    command = args[i:]
    if not command or options["policy"] is None or options["runtime"] not in RUNTIMES:
        return None
    return options, command


def policy_ref(ref: str) -> str | None:
    """A policy file as an absolute path (the gateway's working directory is not ours), a
    policy name as it is (the gateway looks it up in its store); None for a file that does
    not exist."""
    from pathlib import Path

    if "/" in ref or ref.endswith((".yaml", ".yml")) or Path(ref).exists():
        path = Path(ref)
        return str(path.resolve()) if path.is_file() else None
    return ref


def run(options: dict[str, Any], command: list[str]) -> int | None:
    """The command's exit status, or None when the full CLI must take over (nothing was
    created: the gateway refused the sandbox, or `--policy` names no file)."""
    from gateway.cli.attached import run_in_sandbox
    from gateway.errors import SandgateError
    from gateway.home import control_socket
    from gateway.processes.launch import ControlClient

    policy = policy_ref(options["policy"])
    if policy is None:
        return None
    body = {"runtime": options["runtime"], "image": options["image"], "policy": policy,
            "env": {k: v for k, _, v in (pair.partition("=") for pair in options["env"])},
            "secrets": options["secrets"], **({"user": options["user"]} if options["user"]
                                              else {})}
    created: list[str] = []
    try:
        return run_in_sandbox(ControlClient(control_socket=control_socket()), body, command,
                              shared_gateway=True, created=created)
    except SandgateError:
        if not created:
            return None     # the full CLI asks again and prints the gateway's answer
        raise


def main() -> NoReturn:
    """`sandgate`."""
    try:
        code = _quickly(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
    if code is not None:
        sys.exit(code if code >= 0 else 128 - code)
    from gateway.cli.main import main as full

    full()
    sys.exit(0)


def _quickly(args: list[str]) -> int | None:
    """The exit status of `sandgate ARGS` run here, or None for the full CLI."""
    if args[:1] != ["run"] or (plain := parse(args[1:])) is None:
        return None
    from gateway.home import control_socket
    from gateway.processes.launch import socket_accepts

    if not socket_accepts(control_socket()):
        return None     # the full CLI starts a gateway for the command, and says so
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return run(*plain)
    except Exception as e:     # after a sandbox existed: one line, as the full CLI
        if os.environ.get("SANDGATE_DEBUG") == "1":
            raise
        from gateway.cli.main import report_error

        report_error(e)
