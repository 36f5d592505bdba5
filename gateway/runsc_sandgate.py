"""runsc-sandgate: the runc-compatible binary containerd's runc shim runs for the `sandgate`
RuntimeClass. It runs Debian's runsc with `--network=host --ignore-cgroups` (gVisor's
netstack passes through to the namespace it runs in), but only for a bundle whose OCI
config.json joins a network namespace by path: the pod's, which sandgate-cni wired to the
gateway before the pod starts.

Why refuse the others: a `hostNetwork: true` pod never gets a network namespace of its own
(the CRI leaves the `network` entry out, and never calls CNI), and an entry without a path
asks the runtime to make a fresh one that no CNI ADD ever wired. With `--network=host` the
first runs in the node's namespace (unrestricted egress) and the second in one nobody fenced.
So `create`, `run` and `restore` check the bundle; the commands the shim uses on a container
that exists (start, state, kill, delete, exec, ...) pass; anything else is refused.

Start-up matters (the shim calls it several times per container): standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RUNSC_FLAGS", "main", "refusal"]

RUNSC_FLAGS = ["--network=host", "--ignore-cgroups"]
BUNDLE_COMMANDS = frozenset({"create", "run", "restore"})
# what runc's shim runs on a container that exists (or to ask what the runtime supports)
PASSING_COMMANDS = frozenset({"start", "state", "kill", "delete", "exec", "ps", "events",
                              "pause", "resume", "checkpoint", "wait", "list", "features",
                              "update"})
# global flags the shim (go-runc) and runsc take: the ones followed by a value, and the
# switches; any other flag without `=VALUE` hides where the command is, so it is refused
VALUE_FLAGS = frozenset({"root", "log", "log-format", "debug-log", "panic-log",
                         "criu", "platform", "network"})
SWITCHES = frozenset({"debug", "systemd-cgroup", "ignore-cgroups", "rootless", "version",
                      "help"})


def _flag(arg: str) -> tuple[str, bool] | None:
    """`--name=v` / `-name v` as Go's flag package reads them: the name, and whether the
    value is inline; None for an argument that is not a flag."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name, sep, _ = arg.lstrip("-").partition("=")
    return name, bool(sep)


def _command(argv: Sequence[str]) -> tuple[str | None, list[str]] | str:
    """The subcommand and its arguments, or why they cannot be told apart."""
    args = list(argv)
    i = 0
    while i < len(args):
        flag = _flag(args[i])
        if flag is None:
            return args[i], args[i + 1:]
        name, inline = flag
        if not inline and name in VALUE_FLAGS:
            i += 1
        elif not inline and name not in SWITCHES:
            return f"unknown runsc flag {args[i]!r} before the command"
        i += 1
    return None, []


def _bundle(args: Sequence[str], cwd: Path) -> Path | str:
    """The bundle `args` name (`--bundle DIR`, `-bundle=DIR`, `-b DIR`), else `cwd`; why
    not when it is named twice (the check must see the bundle runsc reads)."""
    found = []
    for i, arg in enumerate(args):
        flag = _flag(arg)
        if flag is None or flag[0] not in ("bundle", "b"):
            continue
        if flag[1]:
            found.append(arg.partition("=")[2])
        elif i + 1 < len(args):
            found.append(args[i + 1])
    if len(found) > 1:
        return "the bundle is given more than once"
    return cwd / found[0] if found else cwd


def _network_refusal(bundle: Path) -> str | None:
    """None when config.json joins a network namespace by path, other than ours."""
    try:
        config = json.loads((bundle / "config.json").read_text())
        namespaces = config["linux"]["namespaces"]
        network = [ns for ns in namespaces if ns.get("type") == "network"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"cannot read the network namespace of {bundle}/config.json: {e!r}"
    if not network:
        return "the pod would run in the node's network namespace (hostNetwork)"
    paths = [ns.get("path") for ns in network]
    if len(network) > 1 or not isinstance(paths[0], str) or not paths[0]:
        return "the pod's network namespace is not one the runtime made and named by path"
    try:
        joined, own = os.stat(paths[0]), os.stat("/proc/self/ns/net")
    except OSError as e:
        return f"the pod's network namespace {paths[0]} cannot be read: {e.strerror}"
    if (joined.st_dev, joined.st_ino) == (own.st_dev, own.st_ino):
        return f"{paths[0]} is the node's own network namespace"
    return None


def refusal(argv: Sequence[str], cwd: Path) -> str | None:
    """Why runsc must not run with `argv` (the shim's arguments), or None."""
    parsed = _command(argv)
    if isinstance(parsed, str):
        return parsed
    command, args = parsed
    if command is None or command in PASSING_COMMANDS:
        return None
    if command not in BUNDLE_COMMANDS:
        return f"runsc {command} is not run for sandgate pods"
    bundle = _bundle(args, cwd)
    if isinstance(bundle, str):
        return bundle
    return _network_refusal(bundle)


def _log_file(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--log", "-log"):
            return argv[i + 1]
    return None


def main() -> None:
    argv = sys.argv[1:]
    why = refusal(argv, Path.cwd())
    if why is not None:
        message = (f"runsc-sandgate: refused: {why}; pods of the sandgate RuntimeClass need a "
                   "network namespace of their own, wired by sandgate-cni")
        print(message, file=sys.stderr)
        # the shim reports the last error of runc's JSON log (the kubelet shows it)
        if (log := _log_file(argv)) is not None:
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"level": "error", "msg": message}) + "\n")
        sys.exit(1)
    os.execvp("runsc", ["runsc", *RUNSC_FLAGS, *argv])  # noqa: S606 (runsc in its place)


if __name__ == "__main__":
    main()
