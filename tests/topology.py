"""The test topology: the throw-away internet of sandbox_net.testnet (shared with
`sandgate selftest`), under the names the tests use."""

from sandbox_net.testnet import (  # noqa: F401
    DNS_IP,
    ECHO_IP,
    HTTP_IP,
    HTTPS_IP,
    LINK_HOST,
    LINK_INET,
    MCP_PORT,
    MTLS_IP,
    OTHER_IP,
    REVEAL_PORT,
    TOKENS_IP,
    TRAPS,
    TRAPS_FIRST,
    UDP_IP,
    ZONE,
    Topology,
)
