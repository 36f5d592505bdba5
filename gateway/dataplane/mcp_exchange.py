"""What the MCP guard learned about one HTTP exchange with an MCP server, kept in the flow's
metadata for the audit trail. Apart from gateway.dataplane.addons.mcp_guard, whose MCP SDK
types cost a proxy worker over a second to import: the audit trail needs only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from policies.decision import Decision
from policies.schema import McpSpec

if TYPE_CHECKING:
    from gateway.dataplane.mcp import Item

MCP_KEY = "sandgate.mcp"     # McpExchange
# A JSON-RPC body (request, or a response that must be read) or one SSE event is held whole
# up to this: a tools/call carrying a few MiB of file content fits; what does not is refused.
HOLD_LIMIT = 4 * 1024 * 1024


@dataclass
class McpExchange:
    """What the guard learned about one exchange (audit_trail writes one row per message)."""

    spec: McpSpec
    items: list[Item] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    # (JSON-RPC method, tool, decision) per message, for the audit rows
    errors: list[dict[str, Any]] = field(default_factory=list)  # replies merged into the answer
    calls: list[tuple[str, str | None, Decision]] = field(default_factory=list)
    read_response: bool = False
    answered: bool = False       # the gateway answered; nothing went upstream
    hidden: int = 0              # tools taken out of tools/list answers
