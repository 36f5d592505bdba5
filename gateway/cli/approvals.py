"""`sandgate approvals ...`: requests an `ask` rule holds, allowed or denied through the
running gateway's API: on its root-only socket by default (the decider is `local`), or with
--api URL and SANDGATE_TOKEN over TCP (the decider is the token's name)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from gateway.cli.common import fail, fail_environment, make_settings, print_table

COLUMNS = ("id", "status", "sandbox_id", "method", "scheme", "host", "port", "path", "query",
           "body", "rule", "policy", "expires_at", "scope", "decided_by")


@click.group("approvals")
@click.option("--api", "api_url", envvar="SANDGATE_API_URL", metavar="URL",
              help="the gateway's API over TCP, with the token in SANDGATE_TOKEN (default: "
                   "the local control socket)")
@click.pass_context
def approvals_group(ctx: click.Context, api_url: str | None) -> None:
    """List, allow and deny requests held by `ask` rules."""
    ctx.obj = api_url


@contextmanager
def _client(api_url: str | None) -> Iterator[Any]:
    from gateway.client import Client

    if api_url:
        token = os.environ.get("SANDGATE_TOKEN")
        if not token:
            fail("--api needs a token in SANDGATE_TOKEN", "sandgate token create --role security")
        client = Client(api_url, token)
    else:
        socket = make_settings().control_socket
        if not socket.exists():
            fail_environment(f"no gateway is running at {socket}", "start one: sandgate serve")
        client = Client(uds=str(socket))
    with client:
        yield client


def _call(ctx: click.Context, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    from gateway.client import SandgateAPIError

    with _client(ctx.obj) as client:
        try:
            return client.request(method, path, **kwargs)
        except SandgateAPIError as e:
            fail(f"{e.detail} (HTTP {e.status})", e.hint)
        except httpx.TransportError as e:
            fail_environment(f"the gateway's API does not answer: {e}",
                             "is `sandgate serve` running?")


@approvals_group.command("list")
@click.option("--status", type=click.Choice(["pending", "allowed", "denied", "expired", "revoked",
                                             "all"]),
              default="pending", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def list_command(ctx: click.Context, status: str, as_json: bool) -> None:
    """Approvals, newest first."""
    params = {} if status == "all" else {"status": status}
    rows: list[dict[str, Any]] = _call(ctx, "GET", "/v1/approvals", params=params)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo(f"no {status} approvals" if status != "all" else "no approvals")
        return
    for row in rows:   # None: not announced, a body of any length may follow
        row["body"] = "?" if row.get("body_bytes") is None else row["body_bytes"]
    print_table(rows, COLUMNS)


@approvals_group.command()
@click.argument("approval", type=int)
@click.option("--for", "reach", type=click.Choice(["once", "sandbox", "policy"]),
              default="once", show_default=True,
              help="once: this request; sandbox: later requests of the sandbox with this "
                   "method and path too, whatever their query or body; policy: write an allow "
                   "rule into the sandbox's policy")
@click.pass_context
def allow(ctx: click.Context, approval: int, reach: str) -> None:
    """Let a held request go."""
    row = _call(ctx, "POST", f"/v1/approvals/{approval}/allow", json={"for": reach})
    line = f"approval {approval} allowed for {row['scope']}: {_request(row)}"
    if row.get("policy_rule"):
        line += f"; rule {row['policy_rule']} added to policy {row['policy']}" + \
                (f" (revision {row['revision']})" if row.get("revision") else "") + \
                "; `sandgate policy diff` shows it"
    click.echo(line)


@approvals_group.command()
@click.argument("approval", type=int)
@click.pass_context
def deny(ctx: click.Context, approval: int) -> None:
    """Refuse a held request."""
    row = _call(ctx, "POST", f"/v1/approvals/{approval}/deny")
    click.echo(f"approval {approval} denied: {_request(row)}")


@approvals_group.command()
@click.argument("approval", type=int)
@click.pass_context
def revoke(ctx: click.Context, approval: int) -> None:
    """Take back an allow --for sandbox: the sandbox is asked about such requests again."""
    row = _call(ctx, "POST", f"/v1/approvals/{approval}/revoke")
    click.echo(f"approval {approval} revoked: {_request(row)} of sandbox {row['sandbox_id']} "
               "is asked about again")


def _request(row: dict[str, Any]) -> str:
    query = f"?{row['query']}" if row.get("query") else ""
    return f"{row['method']} {row['scheme']}://{row['host']}:{row['port']}{row['path']}{query}"
