"""The servers of the throw-away internet: run inside its namespace by testnet.py.

Serves, on documentation-range addresses it was given, an HTTP server, an HTTPS server (own
test CA), a DNS server answering the test names, a TCP echo server and a UDP sink. Every
request each server sees is appended as one JSON line to the log file, so tests can assert
what reached (or did not reach) the internet. Prints "ready" when everything listens.

Usage: python -m sandbox_net.testnet.servers CONFIG.json
"""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import brotli
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

from sandbox_net.testnet.views import views

LOG_LOCK = threading.Lock()


class Log:
    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, "time": time.time(), **fields})
        with LOG_LOCK, open(self.path, "a") as f:
            f.write(line + "\n")


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients (load generators) drop connections; not news

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup: not in this namespace.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]


def make_handler(log: Log, scheme: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes: without this, Nagle's algorithm
            # and delayed ACKs add 40 ms to every keep-alive response.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _read_body(self) -> tuple[bytes, int]:
            """(the body, up to 64 KiB of it kept; its full length): read in pieces, chunked
            bodies too, so a large upload costs no memory here."""
            kept, total = b"", 0
            for piece in self._pieces():
                total += len(piece)
                if len(kept) < 65536:
                    kept += piece[:65536 - len(kept)]
            return kept, total

        def _pieces(self) -> Iterator[bytes]:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    yield self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass      # trailers
                return
            left = int(self.headers.get("content-length") or 0)
            while left:
                piece = self.rfile.read(min(left, 1 << 20))
                if not piece:
                    return
                left -= len(piece)
                yield piece

        def _handle(self) -> None:
            body, body_len = self._read_body()
            local = self.connection.getsockname()
            entry = {"scheme": scheme, "method": self.command, "path": self.path,
                     "views": views(self.path),
                     "headers": {k.lower(): v for k, v in self.headers.items()},
                     "header_lines": [[k.lower(), v] for k, v in self.headers.items()],
                     "local": list(local[:2]),
                     "peer": self.client_address[0], "body_len": body_len,
                     "body": body.decode("latin-1"),
                     "sni": getattr(self.connection, "sni", None)}
            encoding = None
            if self.path.startswith("/sigv4"):
                entry["sigv4"] = verify_sigv4(self, body, SIGV4_KEYS)
            log.write("http", **entry)
            if self.path.startswith("/barrier/") and not self._barrier():
                self.send_error(504, "barrier not reached")
                return
            if self.path.startswith("/redirect"):
                target = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["to"][0]
                self.send_response(302)
                self.send_header("location", target)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if self.path.startswith("/stream/"):
                self._stream(int(self.path.split("/")[2]))
                return
            if self.path.startswith("/bytes/"):
                payload = b"x" * int(self.path.split("/")[2])
                ctype = "application/octet-stream"
            else:
                payload = json.dumps(entry).encode()
                ctype = "application/json"
            if self.path.startswith("/echo-gzip"):
                payload, encoding = gzip.compress(payload), "gzip"
            elif self.path.startswith("/echo-br"):
                payload, encoding = brotli.compress(payload), "br"
            elif self.path.startswith("/bad-encoding"):
                encoding = "x-sandgate-unknown"
            self.send_response(200)
            self.send_header("content-type", ctype)
            if encoding:
                self.send_header("content-encoding", encoding)
            # echo the credential headers back too, so scrubbing of headers is exercised
            if "authorization" in self.headers:
                self.send_header("x-echo-authorization", self.headers["authorization"])
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, size: int) -> None:
            """`size` bytes written a MiB at a time, with their length."""
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(size))
            self.end_headers()
            piece = b"x" * (1 << 20)
            while size > 0:
                self.wfile.write(piece[:size])
                size -= len(piece)

        def _barrier(self) -> bool:
            """/barrier/N answers once N requests wait at once (for 10 s at most): a proxy
            that serialised them would never get them all here together."""
            parties = int(self.path.split("/")[2])
            with BARRIERS_LOCK:
                barrier = BARRIERS.setdefault(parties, threading.Barrier(parties, timeout=10))
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return False
            return True

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    return Handler


BARRIERS: dict[int, threading.Barrier] = {}
BARRIERS_LOCK = threading.Lock()
SIGV4_KEYS: dict[str, str] = {}  # access key id -> secret access key (the real ones)


def verify_sigv4(handler: BaseHTTPRequestHandler, body: bytes, keys: dict[str, str]) -> str:
    """Check the request's SigV4 signature the way AWS would, with botocore (an
    implementation independent of the gateway's)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = handler.headers.get("authorization", "")
    try:
        credential = auth.split("Credential=")[1].split(",")[0]
        key_id, _date, region, service, _ = credential.split("/")
        signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        signature = auth.split("Signature=")[1].strip()
    except (IndexError, ValueError):
        return "malformed"
    if key_id not in keys:
        return "unknown-key"
    host = handler.headers["host"]
    request = AWSRequest(method=handler.command, url=f"https://{host}{handler.path}",
                         data=body,
                         headers={k: handler.headers[k] for k in signed if k in handler.headers})
    request.context["timestamp"] = handler.headers["x-amz-date"]
    signer = S3SigV4Auth(Credentials(key_id, keys[key_id]), service, region)
    signer._modify_request_before_signing = lambda r: None  # type: ignore[method-assign,unused-ignore]
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return "valid" if expected == signature else "invalid"


def serve_http(log: Log, address: str, port: int, tls: dict[str, str] | None) -> HTTPServer:
    scheme = "https" if tls else "http"
    server = QuietHTTPServer((address, port), make_handler(log, scheme))
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["cert"], tls["key"])
        context.set_alpn_protocols(["http/1.1"])

        def remember_sni(sock: ssl.SSLSocket, name: str | None, _ctx: Any) -> None:
            sock.sni = name  # type: ignore[attr-defined]

        context.sni_callback = remember_sni  # type: ignore[assignment,unused-ignore]
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers from a zone; a name with several addresses answers them in turn (DNS
    rebinding: the first lookup gets one address, the next another)."""

    def __init__(self, log: Log, zone: dict[str, str | list[str]], ttl: int) -> None:
        self.log = log
        self.ttl = ttl
        self.zone = {k.lower().rstrip("."): v if isinstance(v, list) else [v]
                     for k, v in zone.items()}
        self.turns: dict[str, int] = {}

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        self.log.write("dns", name=qname, qtype=QTYPE[request.q.qtype],
                       transport=handler.protocol)
        addresses = self.zone.get(qname)
        address = None
        if addresses:
            turn = self.turns.get(qname, 0)
            if request.q.qtype in (QTYPE.A, QTYPE.ANY):  # AAAA lookups do not take a turn
                self.turns[qname] = turn + 1
            address = addresses[turn % len(addresses)]
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            # a rebinding name must not be cached: each lookup gets the next address
            ttl = 0 if len(addresses or ()) > 1 else self.ttl
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
        return reply


def serve_websocket(log: Log, address: str, port: int) -> None:
    """A WebSocket echo server (wsproto, the library mitmproxy itself uses)."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            ws = WSConnection(ConnectionType.SERVER)
            while data := self.request.recv(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        log.write("ws", local=[address, port], path=event.target,
                                  host=event.host)
                        self.request.sendall(ws.send(AcceptConnection()))
                    elif isinstance(event, TextMessage):
                        log.write("ws-message", local=[address, port], text=event.data)
                        self.request.sendall(ws.send(TextMessage(data="echo:" + event.data)))
                    elif isinstance(event, CloseConnection):
                        self.request.sendall(ws.send(event.response()))
                        return

    server = EchoServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


class EchoHandler(socketserver.BaseRequestHandler):
    log: Log

    def handle(self) -> None:
        local = self.request.getsockname()
        self.log.write("tcp", local=list(local[:2]), peer=self.client_address[0])
        while data := self.request.recv(65536):
            self.log.write("tcp-data", local=list(local[:2]), size=len(data))
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_udp_sink(log: Log, address: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(65536)
            log.write("udp", local=[address, port], peer=peer[0], size=len(data))

    threading.Thread(target=loop, daemon=True).start()


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    log = Log(config["log"])
    SIGV4_KEYS.update(config.get("sigv4_keys", {}))
    for server in config["http"]:
        serve_http(log, server["address"], server["port"], server.get("tls"))
    dns = config["dns"]
    resolver = ZoneResolver(log, dns["zone"], dns.get("ttl", 5))
    for tcp in (False, True):
        DNSServer(resolver, address=dns["address"], port=53, tcp=tcp,
                  logger=_SilentDnsLogger()).start_thread()
    EchoHandler.log = log
    for echo in config["echo"]:
        server = EchoServer((echo["address"], echo["port"]), EchoHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for sink in config["udp"]:
        serve_udp_sink(log, sink["address"], sink["port"])
    for ws in config.get("websocket", []):
        serve_websocket(log, ws["address"], ws["port"])
    for reveal in config.get("reveal", []):
        from sandbox_net.testnet import reveal as reveal_server

        reveal_server.serve(log.write, reveal["address"], reveal["port"], reveal["tls"]["cert"],
                            reveal["tls"]["key"])
    for mcp in config.get("mcp", []):
        from sandbox_net.testnet import mcpserver

        mcpserver.serve(log.write, mcp["address"], mcp["port"], mcp["tls"]["cert"],
                        mcp["tls"]["key"])
    for tokens in config.get("tokens", []):
        from sandbox_net.testnet import tokens as token_server

        token_server.serve(log.write, tokens["address"], tokens["port"], tokens["tls"]["cert"],
                           tokens["tls"]["key"], tokens["spec"])
    for mtls in config.get("mtls", []):
        from sandbox_net.testnet import mtls as mtls_server

        mtls_server.serve(log.write, mtls["address"], mtls["port"], mtls["tls"]["cert"],
                          mtls["tls"]["key"], mtls["client_ca"])
    print("ready", flush=True)
    threading.Event().wait()


class _SilentDnsLogger:
    def __getattr__(self, _name: str) -> Any:
        return lambda *args, **kwargs: None


if __name__ == "__main__":
    main(sys.argv[1])
