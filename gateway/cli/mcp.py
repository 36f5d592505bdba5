"""`sandgate mcp`: sandboxes as an MCP server (gateway.agent_mcp), over stdio or streamable
HTTP."""

from __future__ import annotations

import os

import click

from gateway.cli.common import fail, fail_environment, make_settings


@click.command("mcp")
@click.option("--http", "listen", metavar="HOST:PORT",
              help="serve streamable HTTP at http://HOST:PORT/mcp (each request carries a "
                   "control-API bearer token); default: stdio")
@click.option("--api", "api_url", metavar="URL",
              help="the control API; default over stdio: the local gateway's root-only "
                   "socket (or with SANDGATE_TOKEN, http://API_HOST:API_PORT); over HTTP: "
                   "http://API_HOST:API_PORT")
def mcp_command(listen: str | None, api_url: str | None) -> None:
    """Serve sandboxes to an MCP client: create one with a policy, run commands, read and
    write files, read its audit rows, destroy it. Every tool acts with the caller's token:
    its role and ownership apply. Over stdio the token is SANDGATE_TOKEN."""
    settings = make_settings()
    default_api = f"http://{settings.api_host}:{settings.api_port}"
    from gateway.agent_mcp import Access, build, http_app

    if listen is not None:
        host, port = _listen(listen)
        api = api_url or default_api
        server = build(Access(url=api, per_request=True))
        import uvicorn

        click.echo(f"sandgate mcp: http://{host}:{port}/mcp (control API {api})", err=True)
        uvicorn.run(http_app(server, api, host), host=host, port=port, log_level="warning")
        return
    token = os.environ.get("SANDGATE_TOKEN")
    if token:
        access = Access(url=api_url or default_api, token=token)
    elif api_url:
        fail("--api needs a token: set SANDGATE_TOKEN to a control-API token",
             "sandgate token create --role operator")
    else:
        sock = settings.control_socket
        if not os.access(sock, os.R_OK | os.W_OK):
            fail_environment(f"cannot use the gateway's control socket {sock}",
                             "run as root on the gateway host, or set SANDGATE_TOKEN (and "
                             "--api URL)")
        access = Access(uds=str(sock))
    build(access).run("stdio")


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        fail(f"--http {text!r} is not HOST:PORT", "write --http 127.0.0.1:8701")
    return host, int(port)
