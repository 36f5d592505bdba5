"""Load from inside a sandbox namespace: COUNT keep-alive HTTP GETs over CONNECTIONS
connections to HOST (resolved through the sandbox's DNS, so through the gateway). Every
DENY_EVERY-th request asks for a path the test policy denies. Prints one JSON line: counts,
and the completion time of each answered request by path.

Usage: python loadgen.py HOST COUNT CONNECTIONS DENY_EVERY TAG
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time


def worker(host: str, paths: list[str], results: dict[str, tuple[int, float]]) -> None:
    # Resolved once (through the gateway's DNS): with the gateway gone, connecting then
    # fails at once instead of waiting out resolver timeouts for every request.
    address = socket.gethostbyname(host)
    conn = http.client.HTTPConnection(address, 80, timeout=10)
    for path in paths:
        try:
            conn.request("GET", path, headers={"Host": host})
            response = conn.getresponse()
            response.read()
            results[path] = (response.status, time.time())
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(address, 80, timeout=10)
    conn.close()


def main() -> None:
    host, count, connections, deny_every, tag = sys.argv[1], *map(int, sys.argv[2:5]), \
        sys.argv[5]
    paths = [f"/{'denied' if deny_every and i % deny_every == 0 else 'load'}/{tag}/{i}"
             for i in range(count)]
    results: dict[str, tuple[int, float]] = {}
    threads = [threading.Thread(target=worker, args=(host, paths[c::connections], results))
               for c in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({
        "ok": sum(1 for s, _ in results.values() if s == 200),
        "denied": sum(1 for s, _ in results.values() if s == 403),
        "other": sum(1 for s, _ in results.values() if s not in (200, 403)),
        "failed": count - len(results),
        "done": {p: t for p, (_s, t) in results.items()},
    }))


if __name__ == "__main__":
    main()
