"""Resource abuse: a sandbox that opens thousands of connections, sends an endless body or
holds half-written requests is held to its policy's limits and does not stall another
sandbox's traffic."""

from __future__ import annotations

import pytest

from gateway.selftest.seat import Seat

pytestmark = pytest.mark.integration


def victim_fetches(seat: Seat, count: int = 10) -> list[str]:
    """Another sandbox's requests, each allowed 10 s: all must succeed meanwhile."""
    result = seat.sh(f"for i in $(seq {count}); do curl -sS --max-time 10 -o /dev/null "
                     "-w '%{http_code}\\n' http://www.upstream.test/victim; done")
    return result.stdout.split()


def test_thousands_of_connections(fresh_seat: Seat, seat: Seat) -> None:
    mark = fresh_seat.mark()
    flood = fresh_seat.sandbox.exec_stream(["/usr/bin/python3", "-c", """
import select, socket, time
address = socket.gethostbyname('www.upstream.test')
held, refused = [], 0
for _ in range(2000):
    try:
        s = socket.create_connection((address, 80), timeout=5)
        s.settimeout(0.2)
        try:
            if s.recv(1) == b'':
                refused += 1        # the gateway closed it at once: over the limit
                s.close()
                continue
        except socket.timeout:
            pass
        held.append(s)
    except OSError:
        refused += 1
# a close the 0.2 s above missed (a loaded machine): a held socket never turns readable (the
# gateway waits for a request on it), a refused one does (EOF)
deadline = time.time() + 3
while held and time.time() < deadline:
    readable, _, _ = select.select(held, [], [], max(deadline - time.time(), 0))
    for s in readable:
        held.remove(s)
        refused += 1
        s.close()
print(len(held), refused, flush=True)
time.sleep(15)
"""], timeout=120)
    kind, line = next(flood)
    assert kind == "stdout"
    held, refused = map(int, line.split())
    try:
        assert held <= 40 and held + refused == 2000       # the policy's limit held
        assert victim_fetches(seat) == ["200"] * 10          # and the others were served
    finally:
        flood.close()
    reasons = fresh_seat.reasons(mark, "tcp")
    assert reasons.count("connection_limit") >= 1900


def test_multi_gigabyte_body(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("""
s = socket.create_connection(('www.upstream.test', 80), timeout=10)
s.sendall(b'POST /upload HTTP/1.1\\r\\nHost: www.upstream.test\\r\\n'
          b'Content-Length: 5368709120\\r\\n\\r\\n')
sent, chunk = 0, b'x' * 65536
try:
    while sent < 5368709120:
        s.sendall(chunk)
        sent += len(chunk)
    out['got'] = 'sent everything'
except OSError as e:
    out['got'] = 'cut off after %d MiB: %s' % (sent // 2**20, type(e).__name__)
""", timeout=120)
    assert str(got["got"]).startswith("cut off")
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "http") == ["body_too_large"]


def test_body_over_the_policy_limit_gets_413(seat: Seat) -> None:
    mark = seat.mark()
    result = seat.sh("head -c 2000000 /dev/zero > /tmp/body && curl -sS --max-time 10 "
                     "-o /dev/null -w '%{http_code}' -H 'Content-Length: 2000000' "
                     "--data-binary @/tmp/body http://www.upstream.test/upload 2>/dev/null; "
                     "true")
    assert result.stdout in ("413", "000")
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "http") == ["body_too_large"]


def test_slowloris(fresh_seat: Seat, seat: Seat) -> None:
    slow = fresh_seat.sandbox.exec_stream(["/usr/bin/python3", "-c", """
import select, socket, time
address = socket.gethostbyname('www.upstream.test')
conns = [socket.create_connection((address, 80), timeout=5) for _ in range(30)]
for s in conns:
    s.sendall(b'GET /slow HTTP/1.1\\r\\nHost: www.upstream.test\\r\\n')
print('holding', flush=True)
for _ in range(20):
    for s in conns:
        try:
            s.sendall(b'X-Slow: 1\\r\\n')
        except OSError:
            pass
    time.sleep(0.5)
"""], timeout=120)
    try:
        assert next(slow) == ("stdout", b"holding\n")
        assert victim_fetches(seat) == ["200"] * 10
    finally:
        slow.close()
