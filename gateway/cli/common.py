"""What every `sandgate` subcommand shares: one-line errors, settings, policy lookup, tables."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from gateway.control.policy_store import PolicyStore
from gateway.errors import SandgateError
from gateway.settings import Settings
from policies.loader import PolicyError, load_file
from policies.matcher import CompiledPolicy

EXIT_USAGE = 2


def fail(message: str, hint: str | None = None) -> NoReturn:
    """Print one line naming the problem and the fix, exit with status 2."""
    click.echo(f"sandgate: error: {message}" + (f" ({hint})" if hint else ""), err=True)
    sys.exit(EXIT_USAGE)


def make_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"bad setting {where}: {first['msg'].removeprefix('Value error, ')}",
             "check the flag or the SANDGATE_* variable")


def policy_path(ref: str, settings: Settings) -> Path:
    """A policy file from a path or a name in the policy directory; exit 2 when missing."""
    if "/" in ref or ref.endswith((".yaml", ".yml")) or Path(ref).exists():
        path = Path(ref)
        if not path.is_file():
            fail(f"policy file {ref} does not exist", "pass --policy PATH to a YAML policy")
        return path.resolve()
    try:
        return PolicyStore(settings.policy_dir).path_for(ref)
    except SandgateError as e:
        fail(e.message, e.hint)


def load_policy(ref: str, settings: Settings) -> CompiledPolicy:
    """Load and compile a policy, or print every problem and exit 2."""
    path = policy_path(ref, settings)
    try:
        return load_file(path)
    except PolicyError as e:
        for error in e.errors:
            click.echo(f"sandgate: error: {error}", err=True)
        fail(f"policy {ref} is invalid", "fix the lines above")


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
        fail(str(e))
    if os.geteuid() != 0:
        fail(f"{command} must run as root (it creates namespaces and nftables rules)",
             "run it with sudo")
