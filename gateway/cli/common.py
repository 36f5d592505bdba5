"""What every `sandgate` subcommand shares: one-line errors with documented exit codes,
settings, policy lookup, tables.

Exit codes (docs in the README, Commands):
  0  done; for a question (policy test, audit verify, policy check), the answer is yes
  1  the answer is no: denied, tampered, a policy with problems, a difference
  2  bad usage or input: the message says what to write instead
  3  the environment: permissions, a read-only or missing directory, no database
  4  a bug in sandgate (the message says how to see the traceback)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from gateway.control.policy_store import PolicyStore
    from gateway.settings import Settings
    from policies.matcher import CompiledPolicy

EXIT_NO = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_BUG = 4


def fail(message: str, hint: str | None = None, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line naming the problem and the fix, exit with `code` (2: usage)."""
    click.echo(f"sandgate: error: {message}" + (f" ({hint})" if hint else ""), err=True)
    sys.exit(code)


def fail_environment(message: str, hint: str | None = None) -> NoReturn:
    fail(message, hint, EXIT_ENVIRONMENT)


def make_settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from gateway.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"bad setting {where}: {first['msg'].removeprefix('Value error, ')}",
             "check the flag or the SANDGATE_* variable")


def writable_home(settings: Settings) -> Path:
    """The data directory, created if needed; exit 3 when it cannot be written."""
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        fail_environment(f"cannot create the data directory {home}: {e.strerror}",
                         "set SANDGATE_HOME to a directory you may write")
    if not os.access(home, os.W_OK | os.X_OK):
        fail_environment(f"the data directory {home} is not writable by this user",
                         "run as its owner, or set SANDGATE_HOME")
    return home


def policy_path(ref: str, settings: Settings) -> Path:
    """A policy file from a path or a name in the policy store (or among the packaged
    policies); exit 2 when missing."""
    from gateway.errors import SandgateError

    if "/" in ref or ref.endswith((".yaml", ".yml")) or Path(ref).exists():
        path = Path(ref)
        if not path.is_file():
            fail(f"policy file {ref} does not exist", "pass --policy PATH to a YAML policy")
        return path.resolve()
    try:
        return policy_store(settings).path_for(ref)
    except SandgateError as e:
        fail(e.message, e.hint)


def policy_store(settings: Settings) -> PolicyStore:
    from gateway.control.policy_store import PolicyStore

    return PolicyStore(settings.policy_dir)


def load_policy(ref: str, settings: Settings) -> CompiledPolicy:
    """Load and compile a policy, or print every problem and exit 2."""
    from policies.loader import PolicyError

    path = policy_path(ref, settings)
    try:
        policy = policy_store(settings).load(path)
    except PolicyError as e:
        for error in e.errors:
            click.echo(f"sandgate: error: {error}", err=True)
        fail(f"policy {ref} is invalid", "fix the lines above")
    return policy


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    if not rows:
        return
    names = list(columns or rows[0].keys())
    cells = [["" if r.get(c) is None else str(r[c]) for c in names] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(names)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(names, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def check_host(settings: Settings, command: str = "sandgate run") -> None:
    """What the host lacks to run sandboxes: the tools first (installing them is the fix
    whoever runs it), then root."""
    from sandbox_net.errors import RuntimeFailure
    from sandbox_net.runtime.gvisor import GVisorRuntime

    try:
        GVisorRuntime(settings.runsc_dir).preflight()
    except RuntimeFailure as e:
        fail_environment(str(e))
    if os.geteuid() != 0:
        fail(f"{command} must run as root (it creates namespaces and nftables rules)",
             "run it with sudo", EXIT_ENVIRONMENT)
