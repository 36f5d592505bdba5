"""The only DNS the sandbox has: allowed names get a synthetic address from the sandbox's own
slice; every other name gets NXDOMAIN. Nothing is ever forwarded upstream, so a query cannot
carry data out.

A server of its own (UDP and TCP, in the main process), not mitmproxy's DNS mode: that keeps
a flow per client address and port, and once one times out (20 s idle) every later query from
that address and port goes unanswered - a resolver that keeps its socket would lose DNS for
good. Here every datagram is answered on its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time

from mitmproxy import dns
from mitmproxy.net.dns import op_codes, response_codes, types

from gateway.dataplane.dns_throttle import DnsThrottle
from gateway.dataplane.registry import SandboxContext
from gateway.dataplane.state import GatewayState
from gateway.timing import DNS_SUMMARY_INTERVAL, DNS_TCP_IDLE, DNS_TICK
from policies.decision import Decision, Reason, deny
from policies.hosts import HostError, normalise_name
from vault import placeholders

logger = logging.getLogger(__name__)


class DnsAnswer:
    def __init__(self, state: GatewayState, ttl: int = 60) -> None:
        self.state = state
        self.ttl = ttl

    def respond(self, source: str, request: dns.DNSMessage) -> dns.DNSMessage:
        sandbox = self.state.registry.by_ip(source)
        if sandbox is None:
            logger.warning("refused DNS query from unknown source %s", source)
            self._record(None, deny(Reason.UNKNOWN_SANDBOX), request, None)
            return request.fail(response_codes.REFUSED)
        self.state.coord.active(sandbox.id)
        if request.op_code != op_codes.QUERY or len(request.questions) != 1:
            self._record(sandbox, sandbox.policy.refuse(Reason.UNSUPPORTED_PROTOCOL), request,
                         None)
            return request.fail(response_codes.NOTIMP)
        question = request.questions[0]
        leaked = self.state.registry.placeholders.lookup_all(
            placeholders.find(question.name.lower()))
        if leaked:
            # A placeholder spelt into a DNS label: never answered, never forwarded.
            self.state.quarantine(sandbox)
            self._record(sandbox, sandbox.policy.refuse(Reason.SECRET_EXFIL_ATTEMPT), request,
                         question.name, ",".join(sorted({b.secret for b in leaked.values()})))
            return request.fail(response_codes.NXDOMAIN)
        try:
            name = normalise_name(question.name)
        except HostError:
            self._record(sandbox, sandbox.policy.refuse(Reason.NO_MATCHING_RULE), request,
                         question.name)
            return request.fail(response_codes.NXDOMAIN)
        decision = sandbox.policy.decide_name(name)
        if not decision.allowed:
            response = request.fail(response_codes.NXDOMAIN)
        elif question.type == types.A:
            address = sandbox.pool.address_for(name)
            response = request.succeed(
                [dns.ResourceRecord.A(question.name, address, ttl=self.ttl)])
        else:
            # The sandbox speaks IPv4 to synthetic addresses only: AAAA, TXT, MX, ANY... get
            # an empty answer, never upstream data.
            response = request.succeed([])
        self._record(sandbox, decision, request, name)
        return response

    def answer(self, source: str, data: bytes) -> bytes | None:
        """The reply to one query in wire format; None for what is not a DNS query."""
        try:
            request = dns.DNSMessage.unpack(data)
        except Exception:
            return None
        if not request.query:
            return None
        return self.respond(source, request).packed

    def _record(self, sandbox: SandboxContext | None, decision: Decision,
                request: dns.DNSMessage, name: str | None, secrets: str | None = None) -> None:
        first = request.questions[0] if request.questions else None
        self.state.record(decision, sandbox_id=sandbox.id if sandbox else None,
                          protocol="dns", method=types.to_str(first.type) if first else None,
                          host=name or (first.name if first else None), port=53,
                          secrets=secrets, pod=sandbox.pod if sandbox else None,
                          pod_uid=sandbox.pod_uid if sandbox else None)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, answers: DnsAnswer, throttle: DnsThrottle) -> None:
        self.answers = answers
        self.throttle = throttle
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.throttle.admit(addr[0]):
            self._answer(data, addr)
        else:
            self.throttle.hold(addr[0], lambda: self._answer(data, addr))

    def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.answers.answer(addr[0], data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsServer:
    """UDP and TCP on `port`, every address (nftables lets only sandbox links reach it)."""

    def __init__(self, state: GatewayState, port: int, ttl: int, throttle: DnsThrottle) -> None:
        self.answers = DnsAnswer(state, ttl)
        self.throttle = throttle
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self.answers, self.throttle), local_addr=("0.0.0.0", self.port))
        self._tcp = await asyncio.start_server(self._serve_tcp, "0.0.0.0", self.port)
        self._ticker = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        """Held queries answered, idle sources forgotten, drops summarised."""
        summarised = time.monotonic()
        while True:
            await asyncio.sleep(DNS_TICK)
            self.throttle.drain()
            if time.monotonic() - summarised >= DNS_SUMMARY_INTERVAL:
                summarised = time.monotonic()
                self.throttle.summarise()

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        source = str(writer.get_extra_info("peername")[0])
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), DNS_TCP_IDLE)
                data = await asyncio.wait_for(
                    reader.readexactly(struct.unpack(">H", head)[0]), DNS_TCP_IDLE)
                while not self.throttle.admit(source):   # one query at a time: just wait
                    await asyncio.sleep(DNS_TICK)
                reply = self.answers.answer(source, data)
                if reply is None:
                    break
                writer.write(struct.pack(">H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.throttle.summarise()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), DNS_TCP_IDLE)
