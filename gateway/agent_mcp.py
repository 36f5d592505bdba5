"""`sandgate mcp`: sandboxes as an MCP server (the official SDK's MCPServer), for agents whose
MCP client should run code in a sandbox instead of on the agent's machine.

Every tool is a call of the control API (gateway.client) made with the caller's own
credentials, so roles and ownership are the API's, checked in one place: over streamable
HTTP, the bearer token of each MCP request (a control-API token); over stdio, the token in
SANDGATE_TOKEN, or the gateway's root-only control socket when there is none (the local
administrator). A sandbox is owned by the token that created it (`token:<id>`): another
owner's token gets the API's 403 for it, and its tools fail with that message.

Paths of the file tools are taken relative to the sandbox's work directory (`WORK_DIR`) and
may not leave it. That is for clarity, not confinement: whoever may run commands in a sandbox
may read what the sandbox can.
"""

from __future__ import annotations

import base64
import logging
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError  # reaches the client as the tool's error

from gateway.client import Client, SandgateAPIError

WORK_DIR = "/tmp"    # where a sandbox may write (its root is read-only)
AUDIT_FIELDS = ("id", "time", "decision", "reason", "rule", "protocol", "method", "host",
                "port", "path", "status", "mcp_method", "mcp_tool", "error")
INSTRUCTIONS = (
    "Run code in sandgate sandboxes: create_sandbox with a policy name (the policy decides "
    "what the sandbox may reach on the network), then run_command, write_file, read_file, "
    "list_files; sandbox_audit shows every network attempt and whether the policy allowed "
    "it; destroy_sandbox when done. File paths are relative to " + WORK_DIR + ".")
T = TypeVar("T")


@dataclass(frozen=True)
class Access:
    """How tool calls reach the control API: `url` with each caller's bearer token (HTTP), or
    `fixed` credentials for the whole process (stdio)."""

    url: str | None = None
    token: str | None = None
    uds: str | None = None
    per_request: bool = False     # take the token from each MCP request's Authorization

    def client(self, headers: Mapping[str, str] | None) -> Client:
        if not self.per_request:
            return Client(self.url or "http://sandgate", token=self.token, uds=self.uds)
        token = bearer(headers or {})
        if token is None:
            raise ToolError("no bearer token: send Authorization: Bearer <control-API token>")
        return Client(self.url or "", token=token)


def bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def work_path(path: str) -> str:
    """`path` under WORK_DIR (relative, or absolute below it). Raises ToolError."""
    joined = posixpath.normpath(posixpath.join(WORK_DIR, path))
    if joined != WORK_DIR and not joined.startswith(WORK_DIR + "/"):
        raise ToolError(f"{path!r} is outside the work directory {WORK_DIR}; give a path "
                        "relative to it")
    return joined


def build(access: Access, name: str = "sandgate") -> MCPServer:
    """The MCP server: its tools, each a control-API call with the caller's credentials."""
    server = MCPServer(name, instructions=INSTRUCTIONS, log_level="WARNING")
    logging.getLogger("httpx").setLevel(logging.WARNING)   # no line per control-API call

    async def call(ctx: Context, work: Callable[[Client], T]) -> T:
        def run() -> T:
            with access.client(ctx.headers) as client:
                try:
                    return work(client)
                except SandgateAPIError as e:
                    raise ToolError(str(e)) from None
        return await anyio.to_thread.run_sync(run)

    @server.tool()
    async def create_sandbox(policy: str, ctx: Context, image: str | None = None,
                             ttl_seconds: int = 3600,
                             secrets: list[str] | None = None) -> dict[str, Any]:
        """Start a sandbox whose network egress follows the named policy. `secrets`: vault
        secrets it gets placeholders for. `image`: the root filesystem, where images exist."""
        extra: dict[str, Any] = {"image": image} if image else {}
        sandbox = await call(ctx, lambda c: c.create(policy, secrets=secrets or [],
                                                      ttl_seconds=ttl_seconds, **extra))
        return {**_public(sandbox.info), "work_dir": WORK_DIR}

    @server.tool()
    async def list_sandboxes(ctx: Context) -> list[dict[str, Any]]:
        """The caller's running sandboxes."""
        found = await call(ctx, lambda c: c.sandboxes())
        return [_public(s) for s in found if s.get("state") == "running"]

    @server.tool()
    async def run_command(sandbox_id: str, command: list[str], ctx: Context,
                          stdin: str | None = None, timeout_seconds: float = 60
                          ) -> dict[str, Any]:
        """Run `command` (argv, no shell; use ["sh", "-c", "..."] for one) in the sandbox,
        in the work directory."""
        result = await call(ctx, lambda c: c.sandbox(sandbox_id).exec(
            command, stdin=stdin, cwd=WORK_DIR, timeout=timeout_seconds))
        return {"exit_code": result.exit_code, "stdout": result.stdout,
                "stderr": result.stderr, "timed_out": result.timed_out}

    @server.tool()
    async def write_file(sandbox_id: str, path: str, content: str, ctx: Context,
                         base64_encoded: bool = False) -> str:
        """Write a file under the work directory (text, or base64 when base64_encoded)."""
        target = work_path(path)
        data = _decode(content) if base64_encoded else content.encode()
        await call(ctx, lambda c: c.sandbox(sandbox_id).upload(target, data))
        return f"wrote {len(data)} bytes to {target}"

    @server.tool()
    async def read_file(sandbox_id: str, path: str, ctx: Context,
                        base64_encoded: bool = False) -> str:
        """Read a file under the work directory (as text, or base64 when base64_encoded)."""
        target = work_path(path)
        data = await call(ctx, lambda c: c.sandbox(sandbox_id).download(target))
        return base64.b64encode(data).decode() if base64_encoded else \
            data.decode(errors="replace")

    @server.tool()
    async def list_files(sandbox_id: str, ctx: Context, path: str = ".") -> list[dict[str, Any]]:
        """The entries of a directory under the work directory."""
        target = work_path(path)
        return await call(ctx, lambda c: c.sandbox(sandbox_id).files(target))

    @server.tool()
    async def sandbox_audit(sandbox_id: str, ctx: Context, limit: int = 100,
                            decision: str | None = None) -> list[dict[str, Any]]:
        """The sandbox's audit rows, oldest first: every network attempt, its decision
        (allow, deny, would_deny, error), the rule and the reason. `decision` filters."""
        def rows(c: Client) -> list[dict[str, Any]]:
            found = c.audit(f"/v1/sandboxes/{sandbox_id}/audit", decision=decision,
                            limit=min(max(limit, 1), 1000))
            return [{k: r.get(k) for k in AUDIT_FIELDS} for _, r in
                    zip(range(max(limit, 1)), found, strict=False)]
        return await call(ctx, rows)

    @server.tool()
    async def destroy_sandbox(sandbox_id: str, ctx: Context) -> str:
        """Stop the sandbox and remove it (its files go with it)."""
        await call(ctx, lambda c: c.request("DELETE", f"/v1/sandboxes/{sandbox_id}"))
        return f"sandbox {sandbox_id} destroyed"

    return server


def _public(info: Mapping[str, Any]) -> dict[str, Any]:
    return {k: info.get(k) for k in ("id", "policy", "state", "runtime", "expires_at")}


def _decode(content: str) -> bytes:
    try:
        return base64.b64decode(content, validate=True)
    except ValueError:
        raise ToolError("content is not valid base64 (base64_encoded is true)") from None


# over HTTP
def http_app(server: MCPServer, api_url: str, host: str) -> Any:
    """The streamable HTTP app at /mcp, behind a bearer-token check against the control API:
    a request without a token the API accepts for sandboxes never reaches the MCP server."""
    import httpx
    from starlette.responses import JSONResponse

    app = server.streamable_http_app(streamable_http_path="/mcp", host=host)

    async def refusal(headers: Mapping[str, str]) -> JSONResponse | None:
        token = bearer(headers)
        if token is None:
            return JSONResponse({"detail": "missing bearer token", "hint": "send "
                                 "Authorization: Bearer <control-API token>"}, 401,
                                {"www-authenticate": "Bearer"})
        try:
            async with httpx.AsyncClient(base_url=api_url, timeout=30) as api:
                answer = await api.get("/v1/sandboxes",
                                       headers={"authorization": f"Bearer {token}"})
        except httpx.TransportError as e:
            return JSONResponse({"detail": f"the control API at {api_url} cannot be reached: "
                                           f"{e}"}, 503)
        if answer.status_code in (401, 403):
            return JSONResponse(answer.json(), answer.status_code)
        return None

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope["headers"]}
            refused = await refusal(headers)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded
