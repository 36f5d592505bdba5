"""`sandgate selftest`: attack a policy from a real sandbox in a throw-away world."""

from __future__ import annotations

import sys

import click

from gateway.cli.common import check_host, fail, load_policy, make_settings, policy_path


@click.command()
@click.option("--policy", required=True, metavar="FILE|NAME",
              help="the policy to check (a file, or a name in the policy directory)")
def selftest(policy: str) -> None:
    """Attack your policy from a real sandbox in a throw-away world of its own.

    Builds its own namespaces, internet (DNS and web servers for the policy's names, traps on
    private and metadata addresses) and gateway; no packet leaves the machine and a running
    gateway is not touched. Prints a line per check; exits 0 when all pass, 1 otherwise."""
    from gateway.dataplane.trust import TrustError, upstream_trust
    from gateway.selftest.run import selftest as run_selftest

    settings = make_settings()
    compiled = load_policy(policy, settings)
    check_host(settings, "sandgate selftest")
    try:
        trust = upstream_trust(settings.ca_dir, settings.upstream_ca)
    except TrustError as e:
        fail(str(e), "point it at a CA bundle, or unset it")
    # The world below has an internet and a CA of its own; this is what `sandgate serve`
    # with this environment verifies real upstreams against.
    click.echo(f"upstream trust: {trust.describe()}")
    if not run_selftest(compiled, policy_path(policy, settings), click.echo):
        sys.exit(1)
