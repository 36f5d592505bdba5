"""A fast, trivial upstream for benchmarks (asyncio, HTTP/1.1 keep-alive): `GET /1m` answers
1 MiB, anything else two bytes. Run inside the test internet's namespace:

    python bench/upstream.py ADDRESS PORT [CERT KEY]
"""

from __future__ import annotations

import asyncio
import ssl
import sys

SMALL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
MIB = (b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nContent-Type: application/octet-stream"
       b"\r\n\r\n" + b"x" * 1048576)


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            self.transport.write(MIB if head.startswith(b"GET /1m ") else SMALL)
            if b"\r\nconnection: close" in head.lower():
                self.transport.close()
                return


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
