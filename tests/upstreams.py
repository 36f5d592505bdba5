"""The 'internet' of the test topology: run inside the inet namespace by tests/topology.py.

Serves, on documentation-range addresses it was given, an HTTP server, an HTTPS server (own
test CA), a DNS server answering the test names, a TCP echo server and a UDP sink. Every
request each server sees is appended as one JSON line to the log file, so tests can assert
what reached (or did not reach) the internet. Prints "ready" when everything listens.

Usage: python upstreams.py CONFIG.json
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

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

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            local = self.connection.getsockname()
            entry = {"scheme": scheme, "method": self.command, "path": self.path,
                     "headers": dict(self.headers.items()), "local": list(local[:2]),
                     "peer": self.client_address[0], "body_len": len(body),
                     "sni": getattr(self.connection, "sni", None)}
            log.write("http", **entry)
            if self.path.startswith("/bytes/"):
                payload = b"x" * int(self.path.split("/")[2])
                ctype = "application/octet-stream"
            else:
                payload = json.dumps(entry).encode()
                ctype = "application/json"
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    return Handler


def serve_http(log: Log, address: str, port: int, tls: dict[str, str] | None) -> HTTPServer:
    scheme = "https" if tls else "http"
    server = QuietHTTPServer((address, port), make_handler(log, scheme))
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["cert"], tls["key"])
        context.set_alpn_protocols(["http/1.1"])

        def remember_sni(sock: ssl.SSLSocket, name: str | None, _ctx: Any) -> None:
            sock.sni = name  # type: ignore[attr-defined]

        context.sni_callback = remember_sni
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, log: Log, zone: dict[str, str]) -> None:
        self.log = log
        self.zone = {k.lower().rstrip("."): v for k, v in zone.items()}

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        self.log.write("dns", name=qname, qtype=QTYPE[request.q.qtype],
                       transport=handler.protocol)
        address = self.zone.get(qname)
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=5))
        return reply


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
    for server in config["http"]:
        serve_http(log, server["address"], server["port"], server.get("tls"))
    dns = config["dns"]
    resolver = ZoneResolver(log, dns["zone"])
    for tcp in (False, True):
        DNSServer(resolver, address=dns["address"], port=53, tcp=tcp,
                  logger=_SilentDnsLogger()).start_thread()
    EchoHandler.log = log
    for echo in config["echo"]:
        server = EchoServer((echo["address"], echo["port"]), EchoHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for sink in config["udp"]:
        serve_udp_sink(log, sink["address"], sink["port"])
    print("ready", flush=True)
    threading.Event().wait()


class _SilentDnsLogger:
    def __getattr__(self, _name: str) -> Any:
        return lambda *args, **kwargs: None


if __name__ == "__main__":
    main(sys.argv[1])
