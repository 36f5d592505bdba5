"""Sends DNS queries over UDP at a fixed rate for a fixed time, reading what comes back, then
prints `sent answered` (run inside a sandbox's namespace by bench/dns_flood.py).

    dns_flood_sender.py SERVER RATE SECONDS
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import time


def query(number: int) -> bytes:
    name = b"".join(bytes([len(p)]) + p for p in (f"f{number % 5000}".encode(), b"upstream",
                                                   b"test")) + b"\0"
    return struct.pack(">HHHHHH", number & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1"


def main() -> None:
    server, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect((server, 53))
    sock.setblocking(False)
    print("listening", flush=True)
    sent = answered = 0
    start = time.monotonic()
    batch = max(1, rate // 200)               # 200 batches a second
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            for _ in range(min(batch, due - sent)):
                with contextlib.suppress(BlockingIOError):
                    sock.send(query(sent))
                sent += 1
        while True:
            try:
                sock.recv(512)
                answered += 1
            except BlockingIOError:
                break
        time.sleep(0.002)
    print(sent, answered, flush=True)


if __name__ == "__main__":
    main()
