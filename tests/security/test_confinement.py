"""Credential confinement, from inside a real sandbox: the real value goes only to its
location on the bound host; a placeholder anywhere else is refused, also towards the bound
host; an upstream giving the credential back in any common encoding, in headers, compressed
or streamed bodies, HTTP/2 trailers or WebSocket messages, gets nothing of it to the sandbox;
bodies cannot exhaust a worker (bombs, endless chunked or HTTP/2 uploads, gigabyte transfers).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from pathlib import Path

import brotli
import pytest

from gateway.client import Client
from gateway.dataplane.decoding import zstd
from tests.harness import Gateway, worker_processes
from tests.security.conftest import SEC_TOKEN, SECURITY_POLICY, Seat
from tests.topology import REVEAL_PORT, Topology
from vault.scrub import forms

pytestmark = pytest.mark.integration

ENCODINGS = ["raw", "b64-0", "b64-1", "b64-2", "b64url-1", "hex", "HEX", "pct", "pct-all"]
REVEAL = f"https://secure.upstream.test:{REVEAL_PORT}/reveal"
AUTH = '-H "Authorization: Bearer $SEC_TOKEN"'
MIB = 1024 * 1024


def leaked(data: str | bytes) -> bool:
    """Whether `data` carries the real value: raw, in any encoding the gateway promises to
    scrub, or decodable as base64 at any offset."""
    raw = data.encode("latin-1", "replace") if isinstance(data, str) else data
    if any(f in raw for f in forms(SEC_TOKEN.encode()) if len(f) >= 8):
        return True
    text = raw.decode("latin-1")
    for alphabet in (None, b"-_"):
        for shift in range(4):
            part = "".join(c for c in text[shift:] if c.isalnum() or c in "+/-_")
            part = part[: len(part) - len(part) % 4]
            try:
                if SEC_TOKEN.encode() in base64.b64decode(part, altchars=alphabet):
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


def curl_all(seat: Seat, urls: dict[str, str], extra: str = "") -> dict[str, str]:
    """Each URL fetched with the placeholder as bearer; what the sandbox received of each
    (headers, trailers and the decoded body)."""
    script = "".join(f"curl -sS --compressed --max-time 20 -D - {extra} {AUTH} '{url}' "
                     f"> /tmp/out-{i} 2>&1; " for i, url in enumerate(urls.values()))
    script += "".join(f"echo '=== {i}'; cat /tmp/out-{i}; " for i in range(len(urls)))
    result = seat.sh(script, timeout=300)
    parts = result.stdout.split("=== ")[1:]
    return {name: parts[i].split("\n", 1)[1] for i, name in enumerate(urls)}


def test_the_real_value_given_back_in_any_encoding_is_scrubbed(seat: Seat) -> None:
    assert leaked(SEC_TOKEN) and leaked(base64.b64encode(b"xx" + SEC_TOKEN.encode()))
    urls = {}
    for enc in ENCODINGS:
        urls[f"{enc} body"] = f"{REVEAL}?enc={enc}"
        urls[f"{enc} chunked body"] = f"{REVEAL}?enc={enc}&length=no"
        urls[f"{enc} header"] = f"{REVEAL}?enc={enc}&where=header"
    for method in ("gzip", "br", "zstd"):
        urls[f"{method} body"] = f"{REVEAL}?enc=b64-1&compress={method}"
        urls[f"{method} streamed body"] = f"{REVEAL}?enc=hex&compress={method}&length=no"
    urls["large body"] = f"{REVEAL}?enc=raw&size={3 * MIB}"
    mark = seat.mark()
    got = curl_all(seat, urls)
    assert not [name for name, text in got.items() if leaked(text)]
    assert all(seat.sandbox.info["id"] not in text for text in got.values())
    sent = [e for e in seat.seen(mark) if e["kind"] == "reveal"]
    assert len(sent) == len(urls)
    # the upstream did get the real value, at the credential's location only
    assert {e["headers"]["authorization"] for e in sent} == {f"Bearer {SEC_TOKEN}"}
    assert not [e for e in sent if leaked(json.dumps({**e, "headers": {
        k: v for k, v in e["headers"].items() if k != "authorization"}}))]
    large = got["large body"]
    assert large.count(".") >= 3 * MIB - 10             # the body itself arrived, scrubbed


def test_http2_trailers_are_scrubbed(seat: Seat) -> None:
    urls = {enc: f"{REVEAL}?enc={enc}&where=trailer" for enc in ("raw", "b64-1", "hex")}
    mark = seat.mark()
    got = curl_all(seat, urls, extra='--http2 -H "te: trailers"')
    seen = [(e["http_version"], e["headers"].get("te")) for e in seat.seen(mark)
            if e["kind"] == "reveal"]
    assert seen == [("2", "trailers")] * len(urls)
    assert all("x-reveal:" in text.lower() for text in got.values()), got
    assert not [name for name, text in got.items() if leaked(text)]


WEBSOCKET = f"""
host = 'secure.upstream.test'
s = ssl.create_default_context().wrap_socket(
    socket.create_connection((host, {REVEAL_PORT}), timeout=10), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(('GET /ws-reveal HTTP/1.1\\r\\nHost: ' + host + '\\r\\nUpgrade: websocket\\r\\n'
           'Connection: Upgrade\\r\\nSec-WebSocket-Key: ' + key + '\\r\\n'
           'Sec-WebSocket-Version: 13\\r\\nAuthorization: Bearer ' + os.environ['SEC_TOKEN'] +
           '\\r\\n\\r\\n').encode())
head = b''
while b'\\r\\n\\r\\n' not in head:
    head += s.recv(1)
out['status'] = head.split(b' ')[1].decode()
def frame():
    first = s.recv(2)
    size = first[1] & 0x7F
    if size == 126:
        size = struct.unpack('>H', s.recv(2))[0]
    data = b''
    while len(data) < size:
        data += s.recv(size - len(data))
    return data.decode()
out['messages'] = [frame() for _ in range(3)]
payload, mask = ('note ' + os.environ['SEC_TOKEN']).encode(), os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
          bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
try:
    out['after'] = repr(s.recv(100))
except OSError as e:
    out['after'] = type(e).__name__
"""


def test_websocket_messages_are_scrubbed_and_a_placeholder_in_one_cuts_it(
        fresh_seat: Seat) -> None:
    mark = fresh_seat.mark()
    got = fresh_seat.run(WEBSOCKET)
    assert got["status"] == "101"
    assert len(got["messages"]) == 3 and not any(leaked(m) for m in got["messages"])
    assert got["after"] in ("b''", "ConnectionResetError")     # cut, nothing echoed
    assert [e for e in fresh_seat.seen(mark) if e["kind"] == "reveal-ws-message"] == []
    rows = [r for r in fresh_seat.rows(mark) if r["reason"] == "secret_exfil_attempt"]
    assert [(r["protocol"], r["secrets"]) for r in rows] == [("ws", "SEC_TOKEN")]


PLACES = {
    "body": '-X POST --data "spell out: $SEC_TOKEN" https://secure.upstream.test/echo',
    "path": "https://secure.upstream.test/v1/$SEC_TOKEN",
    "query": '"https://secure.upstream.test/x?debug=$SEC_TOKEN"',
    "header": '-H "X-Debug: $SEC_TOKEN" https://secure.upstream.test/x',
    "cookie": '--cookie "session=$SEC_TOKEN" https://secure.upstream.test/x',
    "http2 body": '--http2 -X POST --data "$SEC_TOKEN" https://secure.upstream.test:'
                  f'{REVEAL_PORT}/echo-spaced',
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_placeholder_outside_its_location_is_refused_even_to_the_bound_host(
        fresh_seat: Seat, place: str) -> None:
    mark = fresh_seat.mark()
    result = fresh_seat.sh(f"curl -sS --max-time 10 {PLACES[place]}")
    assert json.loads(result.stdout)["reason"] == "secret_exfil_attempt"
    # not even the bound host got it (the gateway's own DNS lookup of it aside)
    assert [e for e in fresh_seat.seen(mark) if e["kind"] != "dns"] == []
    rows = [r for r in fresh_seat.rows(mark) if r["reason"] == "secret_exfil_attempt"]
    assert [r["secrets"] for r in rows] == ["SEC_TOKEN"]
    assert not leaked(json.dumps(rows))


def rss_kib(gateway: Gateway) -> int:
    """The largest resident set of the gateway's proxy workers."""
    sizes = []
    for pid in worker_processes(gateway.home):
        status = Path(f"/proc/{pid}/status").read_text()
        sizes.append(int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:"))))
    return max(sizes)


def bombs() -> dict[str, bytes]:
    """512 MiB each, under the policy's 1 MiB on the wire."""
    zeros = b"\0" * (512 * MIB)
    return {"gzip": gzip.compress(zeros, 9), "br": brotli.compress(zeros, quality=5),
            "zstd": zstd.compress(zeros)}


def test_compression_bombs_are_refused_without_inflating(gateway: Gateway,
                                                         seat: Seat) -> None:
    before = rss_kib(gateway)
    mark = seat.mark()
    statuses = {}
    for encoding, body in bombs().items():
        seat.sandbox.upload(f"/tmp/bomb.{encoding}", body)
        result = seat.sh(f"curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}' "
                         f"-H 'content-encoding: {encoding}' --data-binary @/tmp/bomb.{encoding} "
                         f"{AUTH} https://secure.upstream.test/bomb")
        statuses[encoding] = result.stdout
    assert statuses == {"gzip": "413", "br": "413", "zstd": "413"}
    assert seat.seen(mark, "http") == []
    assert rss_kib(gateway) - before < 64 * 1024                # not 512 MiB inflated
    works = seat.sh("curl -sS -o /dev/null -w '%{http_code}' http://www.upstream.test/after")
    assert works.stdout == "200"                                  # the worker lives on


UPLOAD = """
import ssl, socket
host, size = 'secure.upstream.test', {size}
s = ssl.create_default_context().wrap_socket(socket.create_connection((host, 443),
                                             timeout=60), server_hostname=host)
s.sendall(('POST /sink HTTP/1.1\\r\\nHost: ' + host + '\\r\\nContent-Length: ' + str(size) +
           '\\r\\nAuthorization: Bearer ' + os.environ['SEC_TOKEN'] + '\\r\\n\\r\\n').encode())
piece = b'u' * (1 << 20)
sent = 0
try:
    while sent < size:
        s.sendall(piece[:size - sent])
        sent += len(piece)
    out['reply'] = s.recv(200).decode(errors='replace').split(' ')[1]
except OSError as e:
    out['reply'] = type(e).__name__
"""


def test_a_large_transfer_streams_through_without_growing_the_worker(
        gateway: Gateway, topology: Topology, security_client: Client) -> None:
    """128 MiB up and down through an injecting (and so scrubbing) rule: the workers'
    memory stays flat, where holding either body would add twice the margin
    (bench/run_all.py measures a 1 GiB transfer and its speed)."""
    size = 128 * MIB
    bulk = {**SECURITY_POLICY, "name": "bulk",
            "limits": {"connections": 40, "request_body_bytes": 2048 * MIB}}
    security_client.put_policy("bulk", json.dumps(bulk))
    with security_client.create(policy="bulk", secrets=["SEC_TOKEN"]) as sandbox:
        seat = Seat(topology, security_client, sandbox)
        before = rss_kib(gateway)
        mark = seat.mark()
        up = seat.run(UPLOAD.format(size=size), timeout=300)
        down = seat.sh(f"curl -sS --max-time 240 {AUTH} https://secure.upstream.test/stream/"
                       f"{size} | wc -c", timeout=300)
        grown = rss_kib(gateway) - before
    assert up["reply"] == "200" and int(down.stdout) == size
    (sink,) = [e for e in seat.seen(mark, "http") if e["path"] == "/sink"]
    assert sink["body_len"] == size
    assert grown < 64 * 1024


@pytest.mark.parametrize("http2", [False, True])
def test_an_endless_upload_without_a_length_is_cut_at_the_limit(seat: Seat,
                                                                http2: bool) -> None:
    mark = seat.mark()
    flag = "--http2" if http2 else "--http1.1"
    result = seat.sh(f"head -c {5 * MIB} /dev/zero | curl -sS --max-time 30 {flag} -T - "
                     f"-o /dev/null -w '%{{http_code}}' {AUTH} https://secure.upstream.test/up")
    # cut, or refused; over HTTP/2 the cut stream may first reach mitmproxy's upstream side,
    # which then answers the sandbox 502 (what reached the upstream is checked below)
    assert result.stdout in ("000", "100", "413", "502"), result
    received = [e["body_len"] for e in seat.seen(mark, "http") if e["path"] == "/up"]
    assert all(n <= MIB for n in received)                      # the policy's limit: 1 MiB
    assert "body_too_large" in seat.reasons(mark, "http|h2")


def test_an_http2_upload_without_a_length_arrives_whole_and_framed(seat: Seat) -> None:
    mark = seat.mark()
    result = seat.sh(f"head -c 300000 /dev/zero | tr '\\0' 'q' | curl -sS --max-time 30 "
                     f"--http2 -T - -o /dev/null -w '%{{http_code}}' {AUTH} "
                     "https://secure.upstream.test/framed")
    assert result.stdout == "200"
    (seen,) = seat.seen(mark, "http")                  # one request, not a smuggled second
    assert seen["body_len"] == 300000 and seen["headers"]["transfer-encoding"] == "chunked"


def test_no_audit_row_export_log_or_otlp_record_holds_the_real_value(
        gateway: Gateway, fresh_seat: Seat) -> None:
    from gateway.audit.otlp import payload

    fresh_seat.sh("; ".join(f"curl -sS --max-time 10 -o /dev/null {place}" for place in (
        f"{AUTH} https://secure.upstream.test/v1/$SEC_TOKEN",
        f'{AUTH} "https://secure.upstream.test/x?key=$SEC_TOKEN&token=$SEC_TOKEN"',
        f'{AUTH} -H "User-Agent: $SEC_TOKEN" https://secure.upstream.test/ua',
        f"{AUTH} {REVEAL}?enc=raw&where=header",
        "http://www.upstream.test/$SEC_TOKEN")))
    outputs = {fmt: gateway.sandgate("audit", "export", "--format", fmt).stdout
               for fmt in ("jsonl", "csv", "ocsf")}
    outputs["audit --json"] = gateway.sandgate("audit", "--json", "--limit=100000").stdout
    rows = [json.loads(line) for line in outputs["jsonl"].splitlines() if line.strip()]
    assert any(r["secrets"] == "SEC_TOKEN" for r in rows)       # the run did inject
    from datetime import datetime
    for row in rows:
        row["time"] = datetime.fromisoformat(row["time"].rstrip("Z"))
    outputs["otlp"] = json.dumps(payload(rows, "g"))
    outputs["log"] = (gateway.home / "serve.log").read_text(errors="replace")
    assert [name for name, text in outputs.items() if leaked(text)] == []
