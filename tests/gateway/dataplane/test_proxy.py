"""Reading: a flow's client connection stops being read (a body on budget credit waits for its
next lease) and is read again, on a real socket's asyncio transport."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

from mitmproxy.test import tflow

from gateway.dataplane.proxy import Reading


@dataclass
class Io:
    writer: asyncio.StreamWriter


@dataclass
class Handler:
    transports: dict[Any, Io] = field(default_factory=dict)


@dataclass
class ServerDouble:
    """Stands in for mitmproxy's Proxyserver: its connection handlers by client id, each with
    the transports of its connections (the attributes Reading reads)."""

    connections: dict[str, Handler] = field(default_factory=dict)


def test_a_client_connection_is_paused_and_resumed() -> None:
    async def scenario() -> list[bool]:
        ours, theirs = socket.socketpair()
        _reader, writer = await asyncio.open_connection(sock=ours)
        flow = tflow.tflow()
        server = ServerDouble({flow.client_conn.id: Handler({flow.client_conn: Io(writer)})})
        reading = Reading(server)  # type: ignore[arg-type]
        transport = writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        seen = [transport.is_reading()]
        reading(flow, True)
        seen.append(transport.is_reading())
        reading(flow, False)
        seen.append(transport.is_reading())
        reading(tflow.tflow(), True)            # a flow whose connection is gone: nothing
        seen.append(transport.is_reading())
        writer.close()
        theirs.close()
        return seen

    assert asyncio.run(scenario()) == [True, False, True, True]
