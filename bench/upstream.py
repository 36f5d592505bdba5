"""A fast, trivial upstream for benchmarks (asyncio, HTTP/1.1 keep-alive): `GET /1m` answers
1 MiB, `GET /stream/N` N bytes (written as the socket takes them), `PUT|POST /sink` reads a
body of the given length and answers `ok`; anything else two bytes. Run inside the test
internet's namespace:

    python bench/upstream.py ADDRESS PORT [CERT KEY]
"""

from __future__ import annotations

import asyncio
import ssl
import sys

SMALL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
MIB = (b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nContent-Type: application/octet-stream"
       b"\r\n\r\n" + b"x" * 1048576)
PIECE = b"x" * (256 * 1024)


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""
        self.sinking = 0        # body bytes of a /sink request still to read
        self.streaming = 0      # bytes of a /stream/N answer still to write
        self.paused = False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._produce()

    def _produce(self) -> None:
        while self.streaming and not self.paused:
            piece = PIECE[:self.streaming]
            self.transport.write(piece)
            self.streaming -= len(piece)

    def data_received(self, data: bytes) -> None:
        if self.sinking:
            taken = min(len(data), self.sinking)
            self.sinking -= taken
            data = data[taken:]
            if self.sinking:
                return
            self.transport.write(SMALL)
        self.buffer += data
        while not self.sinking and (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            if not self._answer(head):
                return

    def _answer(self, head: bytes) -> bool:
        lower = head.lower()
        if head.startswith((b"PUT /sink", b"POST /sink")):
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            self.sinking = length
            rest, self.buffer = self.buffer, b""
            self.data_received(rest)      # body bytes that came with the head count too
            return True
        if head.startswith(b"GET /stream/"):
            size = int(head.split(b" ")[1].split(b"/")[2])
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
                                 b"\r\nContent-Length: %d\r\n\r\n" % size)
            self.streaming = size
            self._produce()
            return True
        self.transport.write(MIB if head.startswith(b"GET /1m ") else SMALL)
        if b"\r\nconnection: close" in lower:
            self.transport.close()
            return False
        return True


async def main(address: str, port: int, cert: str | None, key: str | None) -> None:
    context = None
    if cert and key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    server = await asyncio.get_running_loop().create_server(
        Http, address, port, ssl=context, reuse_port=True, backlog=1024)
    print("listening", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], int(args[1]), *(args[2:4] if len(args) > 3 else (None, None))))
