"""The baseline: mitmproxy 12 in transparent mode with only the built-in addons the gateway
also loads, none of the gateway's own (no policy, DNS, injection or audit).

    python bench/bare_mitmproxy.py PORT CONFDIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mitmproxy import master, options

from gateway.dataplane.proxy import builtin_addons


class Listening:
    def running(self) -> None:
        print("listening", flush=True)


async def main(port: int, confdir: str) -> None:
    opts = options.Options()
    proxy = master.Master(opts)
    proxy.addons.add(*builtin_addons(), Listening())
    # Bodies over 1 MiB stream, as the gateway's do (its window): a fair bulk baseline.
    opts.update(mode=[f"transparent@{port}"], confdir=confdir, connection_strategy="lazy",
                ssl_insecure=True, stream_large_bodies="1m")
    await proxy.run()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
