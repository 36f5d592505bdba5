"""Timed MCP calls with the official SDK's client, run in a namespace by bench/mcp.py. Prints
one JSON object: median milliseconds of `tools/list` and of `tools/call`.

    python bench/mcp_calls.py URL CA_FILE MODE COUNT
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import sys
import time

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def measure(url: str, ca: str, mode: str, count: int) -> dict[str, float]:
    lists, calls = [], []
    trust = ssl.create_default_context(cafile=ca)
    # the test internet's certificates carry no Authority Key Identifier, which Python 3.13
    # refuses by default; the gateway's do
    trust.verify_flags &= ~ssl.VERIFY_X509_STRICT
    async with httpx2.AsyncClient(verify=trust, timeout=60) as http, \
            Client(streamable_http_client(url, http_client=http), mode=mode,  # type: ignore[arg-type]
                   cache=None) as client:
        await client.call_tool("read_issue", {"repo": "octo/warm", "number": 0})
        for i in range(count):
            start = time.perf_counter()
            await client.list_tools()
            lists.append(time.perf_counter() - start)
            start = time.perf_counter()
            await client.call_tool("read_issue", {"repo": "octo/bench", "number": i})
            calls.append(time.perf_counter() - start)
    return {"list_ms": round(statistics.median(lists) * 1000, 2),
            "call_ms": round(statistics.median(calls) * 1000, 2)}


if __name__ == "__main__":
    url, ca, mode, count = sys.argv[1:5]
    print(json.dumps(asyncio.run(measure(url, ca, mode, int(count)))))
