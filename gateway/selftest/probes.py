"""What an attacker runs inside the sandbox: small Python programs (the host's python3, seen
read-only inside gVisor) that try one way out each and print a JSON verdict of their own.
Kept as source text: they run in the sandbox, not in the process that sends them (the
security suite, `sandgate selftest`)."""

from __future__ import annotations

import json

PRELUDE = r'''
import base64, json, os, random, socket, ssl, string, struct, sys, time
out = {}
def done():
    print(json.dumps(out))
def dns_query(name, qtype, server=None, tcp=False):
    """rcode and answer count of one query, sent by hand (no resolver library)."""
    if server is None:
        server = open("/etc/resolv.conf").read().split("nameserver")[1].split()[0]
    header = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = header + question + struct.pack(">HH", qtype, 1)
    if tcp:
        s = socket.create_connection((server, 53), timeout=5)
        s.sendall(struct.pack(">H", len(packet)) + packet)
        reply = s.recv(4096)[2:]
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(packet, (server, 53))
        reply = s.recv(4096)
    flags, _, answers = struct.unpack(">HHH", reply[2:8])
    return {"rcode": flags & 0xF, "answers": answers}
def http_raw(address, port, request, wait=5.0, sni=None):
    """Send raw bytes (over TLS with server name `sni` when given), return what comes back
    (decoded) or the error name."""
    try:
        s = socket.create_connection((address, port), timeout=wait)
        if sni is not None:
            s = ssl.create_default_context().wrap_socket(s, server_hostname=sni)
        s.sendall(request)
        s.settimeout(wait)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and (b"content-length: 0" in data.lower() or
                                        data.endswith(b"}\n") or data.endswith(b"}")):
                break
        return data.decode(errors="replace")
    except (OSError, socket.timeout) as e:
        return "error:" + type(e).__name__
def echo(address, port):
    """Send b'ping' to an echo service; what came back ('closed' or the error's name when
    nothing did)."""
    try:
        s = socket.create_connection((address, port), timeout=5)
        s.sendall(b'ping')
        s.settimeout(5)
        return s.recv(100).decode(errors='replace') or 'closed'
    except OSError as e:
        return 'error:' + type(e).__name__
def status_of(text):
    return text.split(" ", 2)[1] if text.startswith("HTTP/") else text
'''


def program(body: str) -> str:
    return PRELUDE + body + "\ndone()\n"


def parse(stdout: str) -> dict[str, object]:
    line = stdout.strip().splitlines()[-1] if stdout.strip() else "{}"
    result: dict[str, object] = json.loads(line)
    return result
