"""An MCP server of the throw-away internet, built with the official SDK (streamable HTTP over
TLS, uvicorn): a few tools of a pretend code host, each call written to the event log, so a
test sees which calls reached the server and which the gateway kept back.

`/mcp` answers the handshake-era protocol with SSE streams (and 2026-07-28 requests with
JSON), `/mcp-json` answers with JSON only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

Write = Callable[..., None]
TOOLS = ("read_issue", "list_repos", "delete_repo", "get_secret")


def make_server(write: Write, name: str) -> Any:
    from mcp.server import MCPServer

    server = MCPServer(name, log_level="WARNING")

    @server.tool()
    def read_issue(repo: str, number: int) -> str:
        """Read an issue of a repository."""
        write("mcp-call", server=name, tool="read_issue", repo=repo)
        return f"issue {number} of {repo}: it works"

    @server.tool()
    def list_repos() -> list[str]:
        """The repositories one may read."""
        write("mcp-call", server=name, tool="list_repos")
        return ["octo/hello", "octo/world"]

    @server.tool()
    def delete_repo(repo: str) -> str:
        """Delete a repository (a tool a policy keeps out of reach)."""
        write("mcp-call", server=name, tool="delete_repo", repo=repo)
        return f"deleted {repo}"

    @server.tool()
    def get_secret(key: str) -> str:
        """Another tool no policy of the tests allows."""
        write("mcp-call", server=name, tool="get_secret")
        return "not for you"

    return server


def make_app(write: Write) -> Any:
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.applications import Starlette

    # the gateway dials on the sandbox's behalf, Host naming the server: no rebinding check
    open_hosts = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    sse = make_server(write, "sse").streamable_http_app(
        streamable_http_path="/mcp", transport_security=open_hosts)
    plain = make_server(write, "json").streamable_http_app(
        streamable_http_path="/mcp-json", json_response=True, transport_security=open_hosts)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with sse.router.lifespan_context(sse), plain.router.lifespan_context(plain):
            yield

    return Starlette(routes=[*sse.routes, *plain.routes], lifespan=lifespan)


def serve(write: Write, address: str, port: int, cert: str, key: str) -> None:
    """uvicorn on its own event loop, in a thread."""
    import uvicorn

    config = uvicorn.Config(make_app(write), host=address, port=port, ssl_certfile=cert,
                            ssl_keyfile=key, log_level="warning", lifespan="on",
                            access_log=False)
    server = uvicorn.Server(config)   # off the main thread it installs no signal handlers
    threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:      # ready once it accepts a connection
        if time.monotonic() > deadline:
            raise RuntimeError("the MCP server did not start")
        time.sleep(0.02)
    socket.create_connection((address, port), timeout=1).close()
