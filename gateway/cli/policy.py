"""`sandgate policy ...`: check, test, explain and diff policies offline; status asks the
running gateway which versions are active and which changes it rejected."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import click

from gateway.cli.common import (
    EXIT_NO,
    fail,
    fail_environment,
    load_policy,
    make_settings,
    policy_store,
    print_table,
)
from gateway.cli.learn import learn_command, replay_command


@click.group("policy")
def policy_group() -> None:
    """Check, test, explain and compare policies (no root needed)."""


def _readable(path: Path) -> None:
    """Exit 3 naming the first file or directory this user cannot read."""
    if not path.exists():
        fail(f"{path} does not exist", "pass a policy file or a directory of them")
    entries = [path]
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            fail_environment(f"cannot read directory {path}", "check its permissions")
        entries = sorted(path.glob("*.y*ml"))
    for entry in entries:
        if entry.is_file() and not os.access(entry, os.R_OK):
            fail_environment(f"cannot read {entry}", "check its permissions")


@policy_group.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(path_type=Path, readable=False))  # checked: exit 3
@click.option("--strict", is_flag=True, help="warnings fail the check too")
def check(paths: tuple[Path, ...], strict: bool) -> None:
    """Validate policy files (or directories of them): every error, and warnings about rules
    that never decide, public-suffix wildcards, addresses never dialable or too broad,
    repeated ports, empty directories. Exit 1 on an error (or, with --strict, a warning)."""
    from policies.lint import check as run_check

    for path in paths:
        _readable(path)
    report = run_check(list(paths), also=policy_store(make_settings()).search)
    for problem in [*report.errors, *report.warnings]:
        click.echo(str(problem))
    failed = report.errors or (strict and report.warnings)
    noun = "policy" if report.checked == 1 else "policies"
    summary = f"{report.checked} {noun}: {len(report.errors)} error(s), " \
              f"{len(report.warnings)} warning(s)"
    if failed:
        click.echo(summary + (" (--strict)" if not report.errors else ""), err=True)
        sys.exit(EXIT_NO)
    click.echo(f"ok: {summary}" if report.warnings else f"ok: {report.checked} {noun}")


@policy_group.command("test")
@click.argument("policy")
@click.argument("method")
@click.argument("url")
@click.option("-H", "--header", "headers", multiple=True, metavar="NAME:VALUE",
              help="a request header (repeatable), as curl's -H")
@click.option("--body-size", type=click.IntRange(0), default=0, metavar="BYTES",
              help="the request body's size, checked against the policy's request_body_bytes")
@click.option("--resolves-to", metavar="IP",
              help="assume the name resolves to this address (checks the never-dialable and "
                   "private ranges)")
@click.option("--mcp-tool", metavar="NAME", help="the body is an MCP tools/call of this tool")
@click.option("--mcp-arg", "mcp_args", multiple=True, metavar="NAME=VALUE",
              help="a string argument of that call (repeatable)")
@click.option("--mcp-method", metavar="METHOD",
              help="the body is an MCP JSON-RPC request of this method (not tools/call)")
def test_command(policy: str, method: str, url: str, headers: tuple[str, ...],
                 body_size: int, resolves_to: str | None, mcp_tool: str | None,
                 mcp_args: tuple[str, ...], mcp_method: str | None) -> None:
    """Would POLICY allow METHOD URL? Prints allow/deny/would_deny, the rule and the reason,
    what the gateway does on the way (DNS, address checks, limits, credentials, the JSON-RPC
    body of an MCP server), and on a denial the nearest rules with the condition each
    failed. Exit 0 when allowed, 1 when the answer is no."""
    from policies.report import mcp_call, parse_header, request_from_url, trial, verdict_line

    compiled = load_policy(policy, make_settings())
    try:
        request = request_from_url(method, url, [parse_header(h) for h in headers])
    except ValueError as e:
        fail(str(e))
    try:
        address = ipaddress.IPv4Address(resolves_to) if resolves_to else None
    except ValueError:
        fail(f"--resolves-to {resolves_to!r} is not an IPv4 address", "write it as 203.0.113.7")
    try:
        call = mcp_call(mcp_tool, mcp_args, mcp_method)
    except ValueError as e:
        fail(str(e))
    result = trial(compiled, request, body_size, address, call)
    click.echo(verdict_line(result, compiled))
    for step in result.steps:
        click.echo(f"  {step}")
    if result.nearest:
        click.echo("  nearest rules:")
        for line in result.nearest:
            click.echo(f"    {line}")
    sys.exit(0 if result.decision.verdict == "allow" else EXIT_NO)


@policy_group.command()
@click.argument("policy")
def explain(policy: str) -> None:
    """What POLICY allows and denies: its mode and sandbox limits, `extends` resolved, and a
    table of its rules."""
    from policies.report import explain_header, explain_rows

    compiled = load_policy(policy, make_settings())
    for line in explain_header(compiled):
        click.echo(line)
    if not compiled.rules:
        click.echo("no rules: everything is denied")
        return
    print_table(explain_rows(compiled))


@policy_group.command("diff")
@click.argument("old")
@click.argument("new")
def diff_command(old: str, new: str) -> None:
    """Every change from OLD to NEW that affects egress or credentials, each marked widens,
    narrows or credentials; exit 1 when there is one."""
    from policies.diff import diff

    settings = make_settings()
    changes = diff(load_policy(old, settings), load_policy(new, settings))
    for change in changes:
        click.echo(str(change))
    if not changes:
        click.echo("no change to egress or credentials")
    sys.exit(EXIT_NO if changes else 0)


@policy_group.command()
def status() -> None:
    """Active policy versions in the running gateway, and changes it rejected."""
    from gateway.processes.launch import ControlClient

    settings = make_settings()
    client = ControlClient(settings)
    try:
        if not client.healthy():
            fail_environment(f"no gateway is running for {settings.home}",
                             "start one: sandgate serve")
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
    sys.exit(EXIT_NO if problems or report["directory_errors"] else 0)


# the authoring loop over the audit log (gateway/cli/learn.py)
policy_group.add_command(learn_command)
policy_group.add_command(replay_command)
