"""`sandgate serve` (a gateway host) and `sandgate api` (the control API alone, for a cluster)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from gateway.cli.common import fail, make_settings

upstream_options = [
    click.option("--upstream-resolver", metavar="IP",
                 help="DNS server the gateway resolves allowed names with "
                      "(default: the system's; env SANDGATE_UPSTREAM_RESOLVER)"),
    click.option("--upstream-ca", metavar="FILE", type=click.Path(dir_okay=False),
                 help="CA certificates the gateway trusts for upstream TLS in addition to "
                      "the host's trust store (env SANDGATE_UPSTREAM_CA)"),
]


def with_upstream[F: Callable[..., Any]](f: F) -> F:
    for option in reversed(upstream_options):
        f = option(f)
    return f


def _log_to_stderr() -> None:
    import logging  # here: `sandgate run` imports this module for its options alone

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command()
@click.option("--host", "api_host", metavar="ADDRESS",
              help="control API address (default 127.0.0.1; env SANDGATE_API_HOST)")
@click.option("--port", "api_port", type=int, metavar="PORT",
              help="control API port (default 8700; env SANDGATE_API_PORT)")
@click.option("--destroy-on-stop", is_flag=True, default=None,
              help="destroy every sandbox when stopped (default: they keep running, egress "
                   "refused, until the next start adopts them; env SANDGATE_DESTROY_ON_STOP)")
@with_upstream
def serve(api_host: str | None, api_port: int | None, destroy_on_stop: bool | None,
          upstream_resolver: str | None, upstream_ca: str | None) -> None:
    """Run the gateway and the control API until interrupted."""
    import asyncio

    settings = make_settings(upstream_resolver=upstream_resolver, upstream_ca=upstream_ca,
                             api_host=api_host, api_port=api_port,
                             destroy_on_stop=destroy_on_stop)
    import logging

    from gateway.processes import serve as server

    _log_to_stderr()
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)  # a line per connection otherwise
    click.echo(f"sandgate: data in {settings.home}, policies from {settings.policy_dir}, "
               f"control socket {settings.control_socket}, API http://{settings.api_host}:"
               f"{settings.api_port} (audit view /audit)", err=True)
    asyncio.run(server.serve(settings))


@click.command("api")
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
    _log_to_stderr()
    click.echo(f"sandgate api: http://{settings.api_host}:{settings.api_port}, policies "
               f"mirrored in {settings.policy_dir}", err=True)
    asyncio.run(control_plane.serve_api(settings))
