"""What a rule's `mcp:` key means: which JSON-RPC messages a sandbox may send to an MCP server
reached over streamable HTTP, and which tools it may see listed.

- `tools/call` passes only for a tool name some `tools` glob matches and no `deny_tools` glob
  does (`deny_tools` wins), and only when every argument named in `args` is present at the top
  level of the call's arguments as a string matching its glob.
- The base methods (`BASE_METHODS`: the session's lifecycle, `ping`, cancellation, discovery
  and `tools/list`, whose answers are filtered) always pass; any other method passes only
  when a `methods` glob matches it.
- A JSON-RPC response the client posts (its answer to a server's own request: sampling,
  elicitation, roots) carries whatever the sandbox writes outside `tools` and `args`, and the
  gateway cannot tell which request it answers: it passes only when `methods` names one of
  the server requests (`SERVER_REQUESTS`), or when it carries nothing (an empty result, the
  answer to a server's `ping`).
- `tools/list` answers show only the tools a call would be allowed for.

Pure functions; the gateway (gateway.dataplane.mcp) parses the wire with the MCP SDK's types.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from policies.schema import McpSpec

BASE_METHODS = ("initialize", "notifications/initialized", "ping", "notifications/cancelled",
                "server/discover", "tools/list")
SERVER_REQUESTS = ("roots/list", "sampling/createMessage", "elicitation/create")
CALL = "tools/call"


class McpMiss(enum.StrEnum):
    """Why a JSON-RPC message was refused."""

    TOOL_NOT_LISTED = "tool_not_listed"
    TOOL_DENIED = "tool_denied"
    ARGUMENT = "argument"
    METHOD = "method"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class McpRefusal:
    miss: McpMiss
    text: str           # one line: what was refused and which condition it missed


def _any(globs: list[str], value: str) -> str | None:
    return next((g for g in globs if fnmatch.fnmatchcase(value, g)), None)


def tool_visible(spec: McpSpec, name: str) -> bool:
    """Would a call of `name` pass, arguments aside? (what `tools/list` keeps)"""
    return _any(spec.deny_tools, name) is None and _any(spec.tools, name) is not None


def check_call(spec: McpSpec, name: str, arguments: Mapping[str, object] | None
               ) -> McpRefusal | None:
    """None when `tools/call` of `name` with `arguments` may go out."""
    if glob := _any(spec.deny_tools, name):
        return McpRefusal(McpMiss.TOOL_DENIED, f"tool {name!r} matches deny_tools {glob!r}")
    if _any(spec.tools, name) is None:
        listed = ", ".join(spec.tools) or "none"
        return McpRefusal(McpMiss.TOOL_NOT_LISTED,
                          f"tool {name!r} matches none of tools ({listed})")
    for key, glob in spec.args.items():
        value = (arguments or {}).get(key)
        if not isinstance(value, str):
            shown = "missing" if value is None else "not a string"
            return McpRefusal(McpMiss.ARGUMENT, f"tool {name!r}: argument {key!r} is {shown} "
                                                f"(args needs a string matching {glob!r})")
        if not fnmatch.fnmatchcase(value, glob):
            # the value is not repeated: the gateway may have written a credential into it
            return McpRefusal(McpMiss.ARGUMENT, f"tool {name!r}: argument {key!r} does not "
                                                f"match {glob!r}")
    return None


def check_method(spec: McpSpec, method: str) -> McpRefusal | None:
    """None when a request or notification of `method` (not tools/call) may go out."""
    if method in BASE_METHODS or _any(spec.methods, method):
        return None
    return McpRefusal(McpMiss.METHOD, f"method {method[:100]!r} is neither a base method nor "
                                      f"in methods ({', '.join(spec.methods) or 'none'})")


def check_response(spec: McpSpec, empty: bool) -> McpRefusal | None:
    """None when the client may post a JSON-RPC response (or error) to the server."""
    if empty or any(_any(spec.methods, m) for m in SERVER_REQUESTS):
        return None
    return McpRefusal(McpMiss.RESPONSE, "a response to a server's request carries data past "
                                        "`tools` and `args`; list the server request it answers "
                                        f"({', '.join(SERVER_REQUESTS)}) in methods")


def describe(spec: McpSpec) -> str:
    """One line for `policy explain` and `policy test`."""
    parts = [f"tools/call for {', '.join(spec.tools) or 'no tool'}"]
    if spec.deny_tools:
        parts.append(f"never {', '.join(spec.deny_tools)}")
    if spec.args:
        parts.append("args " + " ".join(f"{k}={v}" for k, v in spec.args.items()))
    parts.append("methods " + ", ".join([*BASE_METHODS, *spec.methods]))
    return "; ".join(parts) + "; tools/list answers filtered"
