"""`sandgate policy ...`: check, test, explain and diff policies offline; status asks the
running gateway which versions are active and which changes it rejected."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli.common import fail, load_policy, make_settings, print_table
from policies.decision import Verdict
from policies.loader import LoadError, PolicyError, load_directory, load_file
from policies.matcher import CompiledPolicy
from policies.report import diff, explain_rows, request_from_url


@click.group("policy")
def policy_group() -> None:
    """Check, test, explain and compare policies."""


def _errors_for(path: Path) -> tuple[int, list[LoadError]]:
    """(policies checked, problems) for a file or a directory of policy files."""
    if path.is_dir():
        policies, errors = load_directory(path)
        return len(policies) + len({e.file for e in errors}), errors
    try:
        load_file(path)
    except PolicyError as e:
        return 1, e.errors
    return 1, []


@policy_group.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(paths: tuple[Path, ...]) -> None:
    """Validate policy files (or directories of them); exit 1 listing every problem."""
    total, problems = 0, []
    for path in paths:
        if not path.exists():
            fail(f"{path} does not exist")
        count, errors = _errors_for(path)
        total += count
        problems += errors
    for error in problems:
        click.echo(str(error))
    if problems:
        click.echo(f"{len(problems)} problem(s) in {len({e.file for e in problems})} file(s)",
                   err=True)
        sys.exit(1)
    click.echo(f"ok: {total} polic{'y' if total == 1 else 'ies'}")


def _load(ref: str) -> CompiledPolicy:
    return load_policy(ref, make_settings())


@policy_group.command("test")
@click.argument("policy")
@click.argument("method")
@click.argument("url")
def test_command(policy: str, method: str, url: str) -> None:
    """Would POLICY allow METHOD URL? Prints allow/deny/would_deny, the rule and the reason;
    exit 0 when allowed, 1 when the policy says no."""
    compiled = _load(policy)
    try:
        request = request_from_url(method, url)
    except ValueError as e:
        fail(str(e))
    decision = compiled.decide(request)
    click.echo(f"{decision.verdict}  rule={decision.rule or '-'}  reason={decision.reason}  "
               f"policy={compiled.name}@{compiled.version}")
    sys.exit(0 if decision.verdict == Verdict.ALLOW else 1)


@policy_group.command()
@click.argument("policy")
def explain(policy: str) -> None:
    """A table of what POLICY allows and denies, its `extends` resolved."""
    compiled = _load(policy)
    click.echo(f"policy {compiled.name} version {compiled.version} mode {compiled.spec.mode}"
               + (f" extends {', '.join(compiled.spec.extends)}" if compiled.spec.extends else ""))
    if not compiled.rules:
        click.echo("no rules: everything is denied")
        return
    print_table(explain_rows(compiled))


@policy_group.command("diff")
@click.argument("old")
@click.argument("new")
def diff_command(old: str, new: str) -> None:
    """What changing OLD into NEW opens (+) and closes (-); exit 1 when they differ."""
    lines = diff(_load(old), _load(new))
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("no change in what is allowed")
    sys.exit(1 if lines else 0)


@policy_group.command()
def status() -> None:
    """Active policy versions in the running gateway, and changes it rejected."""
    from gateway.processes.launch import ControlClient

    settings = make_settings()
    client = ControlClient(settings)
    try:
        if not client.healthy():
            fail(f"no gateway is running for {settings.home}", "start one: sandgate serve")
        report = client.policy_status()
    finally:
        client.close()
    rows = [{"name": h["name"], "version": h["version"], "mode": h["mode"],
             "status": "ok" if not h["error"] else "REJECTED CHANGE", "source": h["source"]}
            for h in report["active"]]
    if rows:
        print_table(rows)
    else:
        click.echo("no policy is in use by a sandbox")
    problems = [h for h in report["active"] if h["error"]]
    for handle in problems:
        click.echo(f"\n{handle['source']}: change rejected, version {handle['version']} stays "
                   f"active:\n{handle['error']}")
    if report["directory_errors"]:
        click.echo(f"\nproblems in {report['policy_dir']}:")
        for error in report["directory_errors"]:
            click.echo(f"  {error}")
    sys.exit(1 if problems or report["directory_errors"] else 0)

