"""The worker's real mitmproxy (build_master, every addon) on a loopback port, root-free: a
request held for approval must not let the sandbox fill the worker's memory through the
same connection, neither with the held request's body nor with pipelined bytes after it.

The nft redirect is the one thing stood in for (`original_addr`, which reads where the
sandbox meant to go from the redirect, answers the test's synthetic address)."""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import h2.config
import h2.connection
import h2.events
import pytest
from mitmproxy import master, platform

from gateway.approvals.ask import Scope
from gateway.approvals.book import ApprovalBook
from gateway.dataplane.proxy import Pauser, build_master
from gateway.db import make_engine
from gateway.settings import Settings
from policies import addresses
from tests.doubles import Plane, data_plane
from tests.harness import free_port, wait_for

POLICY = """
version: 1
name: web
rules:
  - {id: asked, action: ask, hosts: [api.example.test], ports: [80], protocols: [http]}
"""
PUSH = 96 << 20          # what the sandbox tries to push while its request is held
CHUNK = 1 << 20
STALL = 1.0              # no byte taken for this long: the gateway stopped reading


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class Worker:
    """One proxy worker's mitmproxy, running on its own event loop in a thread."""

    def __init__(self, tmp_path: Path, policy: str = POLICY,
                 answers: dict[str, list[str]] | None = None) -> None:
        self.plane: Plane = data_plane(tmp_path, policy, ip="127.0.0.1",
                                       answers=answers or {"api.example.test": ["203.0.113.10"]})
        engine = make_engine(f"sqlite:///{tmp_path / 'approvals.db'}")
        self.book = ApprovalBook(engine, self.plane.sink.rows.append, gateway_id="gw",
                                 timeout=60)
        self.plane.authority.approvals = self.book
        self.port = free_port()
        self.settings = Settings(home=tmp_path)
        self.ready = threading.Event()
        self.proxy: master.Master | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        self.proxy = build_master(self.settings, self.plane.state, tcp_port=self.port,
                                  on_ready=self.ready.set)
        await self.proxy.run()
        await self.proxy.addons.get("proxyserver").servers.update([])   # closes the listener

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.shutdown()
        self.thread.join(30)
        self.book.engine.dispose()


def running(worker: Worker, name: str, port: int,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """The worker started, every connection to it dialed to `name`:`port`."""
    dialed = (worker.plane.address_of(name), port)
    monkeypatch.setattr(platform, "original_addr", lambda _sock: dialed)
    worker.thread.start()
    assert worker.ready.wait(60), "the proxy did not start"
    yield worker
    worker.stop()


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    yield from running(Worker(tmp_path), "api.example.test", 80, monkeypatch)


def push(sock: socket.socket, unit: bytes, limit: int) -> int:
    """Send `unit` again and again, up to `limit` bytes; stop when the gateway has taken
    nothing for STALL seconds. Returns the bytes it took."""
    sock.setblocking(False)
    stream, sent = memoryview(unit * 2), 0
    while sent < limit:
        _, writable, _ = select.select([], [sock], [], STALL)
        if not writable:
            break
        at = sent % len(unit)
        try:
            sent += sock.send(stream[at:at + len(unit)])
        except BlockingIOError:
            continue
    return sent


@pytest.mark.parametrize(("head", "unit"), [
    # a chunked body sent while the request waits
    ("POST /upload HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"),
    # no body: what follows is pipelined, and mitmproxy would buffer it for the next request
    ("GET /items HTTP/1.1\r\nHost: api.example.test\r\n\r\n", b"x" * CHUNK),
], ids=["body", "pipelined"])
def test_a_held_request_cannot_fill_the_workers_memory(worker: Worker, head: str,
                                                       unit: bytes) -> None:
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall(head.encode())
        pending = wait_for(lambda: worker.book.list("pending"), timeout=30)
        before = rss()
        taken = push(sock, unit, PUSH)
        grown = rss() - before
        print(f"held request: the gateway took {taken >> 20} MiB of {PUSH >> 20} MiB "
              f"(the rest waits in the sandbox's socket); the worker grew {grown >> 20} MiB")
        # what the kernel's socket buffers hold (up to tcp_rmem + tcp_wmem) is not the
        # worker's; the worker itself keeps at most what it read before the pause
        assert grown < 16 << 20
        assert taken < PUSH
        decider = threading.Thread(target=worker.book.decide, args=(pending[0]["id"],),
                                   kwargs={"allow": False, "scope": Scope.ONCE, "who": "ann"})
        decider.start()
        decider.join(30)
        sock.setblocking(True)
        deadline = time.monotonic() + 30
        answer = b""
        while time.monotonic() < deadline and b"\r\n" not in answer:   # 403, or cut
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                break
            if not data:
                break
            answer += data
        assert not answer or answer.startswith(b"HTTP/1.1 403")


def test_a_reader_that_paused_itself_does_not_resume_the_hold() -> None:
    """asyncio's StreamReader pauses its transport when its buffer is full and resumes it
    once a read drains it. A hold that begins while the reader had paused must still stop
    reading until it ends: mitmproxy's read loop drains the buffer meanwhile."""

    async def scenario() -> tuple[bool, bool, bool]:
        accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
            asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)),
                                            "127.0.0.1", 0, limit=1024)
        port = server.sockets[0].getsockname()[1]
        _, client = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await accepted
        client.write(b"x" * (256 << 10))
        await client.drain()
        while not reader._paused:   # type: ignore[attr-defined]  # it paused itself: full
            await asyncio.sleep(0.01)
        # mitmproxy's connection handler, as Pauser finds it
        handler = SimpleNamespace(client="c", transports={"c": SimpleNamespace(
            reader=reader, writer=writer)})
        pauser = Pauser(SimpleNamespace(connections={"id": handler}))  # type: ignore[arg-type]
        transport = writer.transport
        with pauser("id"):
            while len(reader._buffer):   # type: ignore[attr-defined]  # as the read loop does
                await reader.read(4096)      # (a resume would come from within the read)
            held = transport.is_reading()
        after = transport.is_reading()
        nested = Pauser(SimpleNamespace(connections={"id": handler}))  # type: ignore[arg-type]
        with nested("id"):
            with nested("id"):
                pass
            inner_released = transport.is_reading()
        for stream in (client, writer):
            stream.close()
        server.close()
        return held, after, inner_released

    held, after, inner_released = asyncio.run(scenario())
    assert not held and after
    assert not inner_released          # the outer hold still stands


class SlowUpstream:
    """An upstream on loopback that reads a request and answers only when told."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.asked = threading.Event()
        self.answer = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            self.asked.set()
            self.answer.wait(60)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            while conn.recv(65536):   # whatever else comes, until the gateway closes
                pass

    def close(self) -> None:
        self.answer.set()
        self.listener.close()


@pytest.fixture
def slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Worker, SlowUpstream]]:
    upstream = SlowUpstream()
    policy = f"""
version: 1
name: web
rules:
  - {{id: slow, hosts: [slow.example.test], ports: [{upstream.port}], protocols: [http]}}
"""
    # Stand-in: the gateway never dials loopback; the test's upstream can only live there
    # without root. Every other check on the dialed address stays.
    monkeypatch.setattr(addresses, "HARD_REFUSED", tuple(
        (network, label) for network, label in addresses.HARD_REFUSED if label != "loopback"))
    worker = Worker(tmp_path, policy, answers={"slow.example.test": ["127.0.0.1"]})
    for started in running(worker, "slow.example.test", upstream.port, monkeypatch):
        yield started, upstream
        upstream.close()


def test_pipelined_bytes_behind_a_slow_answer_stay_in_the_sandbox(
        slow: tuple[Worker, SlowUpstream]) -> None:
    """HTTP/1: mitmproxy would read on behind a request waiting for its answer and keep all
    of it for the next request (addons.one_at_a_time)."""
    worker, upstream = slow
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: slow.example.test\r\n\r\n")
        assert upstream.asked.wait(30), "the request did not reach the upstream"
        before = rss()
        taken = push(sock, b"x" * CHUNK, PUSH)
        grown = rss() - before
        print(f"behind a slow answer: the gateway took {taken >> 20} MiB of {PUSH >> 20} MiB; "
              f"the worker grew {grown >> 20} MiB")
        assert taken < PUSH and grown < 16 << 20
        upstream.answer.set()
        sock.setblocking(True)
        answer = b""
        while b"ok" not in answer:
            data = sock.recv(65536)
            assert data, f"closed before the answer: {answer!r}"
            answer += data
        assert answer.startswith(b"HTTP/1.1 200")


H2_POLICY = """
version: 1
name: web
rules:
  - {id: read, hosts: [api.example.test], ports: [443], methods: [GET]}
"""


@pytest.fixture
def h2_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    yield from running(Worker(tmp_path, H2_POLICY), "api.example.test", 443, monkeypatch)


def h2_connection(port: int) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the gateway's own CA
    context.set_alpn_protocols(["h2"])
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                               server_hostname="api.example.test")
    assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def h2_events(sock: ssl.SSLSocket, conn: h2.connection.H2Connection,
              until: Callable[[list[h2.events.Event]], bool]) -> list[h2.events.Event]:
    seen: list[h2.events.Event] = []
    deadline = time.monotonic() + 30
    while not until(seen) and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        seen += conn.receive_data(data)
        sock.sendall(conn.data_to_send())
    return seen


def test_a_refused_http2_request_is_answered_and_its_body_never_held(h2_worker: Worker) -> None:
    """HTTP/2 of no announced length: refused at its head, a request whose HEADERS ended the
    stream still gets its 403; one whose body keeps coming is cut, never read whole into
    the worker (mitmproxy reads a refused request's body before it answers)."""
    sock, conn = h2_connection(h2_worker.port)
    with sock:
        head = [(":method", "POST"), (":scheme", "https"), (":path", "/items"),
                (":authority", "api.example.test")]
        conn.send_headers(1, head, end_stream=True)       # no body
        sock.sendall(conn.data_to_send())
        events = h2_events(sock, conn, lambda seen: any(
            isinstance(e, h2.events.StreamEnded) for e in seen))
        [answer] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(answer.headers)[b":status"] == b"403"

        conn.send_headers(3, head)                         # a body follows, without end
        sock.sendall(conn.data_to_send())
        before = rss()
        sock.setblocking(False)
        taken, chunk, cut = 0, b"x" * 16384, False
        started = time.monotonic()
        deadline = started + 20
        while taken < PUSH and time.monotonic() < deadline:
            window = min(conn.local_flow_control_window(3), conn.max_outbound_frame_size)
            if window:
                conn.send_data(3, chunk[:window])
            try:
                sock.sendall(conn.data_to_send())
                taken += window
            except (BlockingIOError, ssl.SSLWantWriteError):
                pass
            except OSError:
                cut = True                                 # what the test wants
                break
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                select.select([sock], [sock], [], 0.05)
                continue
            except OSError:
                cut = True
                break
            if not data:
                cut = True
                break
            conn.receive_data(data)
        grown = rss() - before
        print(f"refused HTTP/2 upload: {taken >> 20} MiB sent, cut {cut} after "
              f"{time.monotonic() - started:.1f} s; the worker grew {grown >> 20} MiB")
        assert cut and grown < 16 << 20
