"""Talking to the microVM's guest agent over its virtio serial port (a unix socket on the
host, QEMU's side of the port). See microvm_image.AGENT for the guest half.

Runnable as a command, which is how `exec_command` runs something in a VM with the caller's
stdin, stdout and stderr (the same contract as `runsc exec`):

    python -m sandbox_net.runtime.vm_agent SOCKET REQUEST.json
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import posixpath
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox_net.errors import RuntimeFailure
from sandbox_net.runtime.microvm_image import NEWROOT

KILLED = 137  # what the guest's `timeout -s KILL` leaves


def script_for(argv: list[str], env: dict[str, str], cwd: str, uid: int, gid: int) -> str:
    """The guest script that runs `argv` in the image's root (microvm_image.NEWROOT) as
    uid:gid in `cwd`, without new privileges. It runs in the agent's busybox shell, outside
    the image; nsenter -r/-w enters the image's root and working directory. nsenter opens
    the directory before it enters the root, so every component of `cwd` must be a real
    directory: a symlink in the image (resolved against the initramfs's root there) is
    refused."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()
                      if k.replace("_", "").isalnum())
    cwd = posixpath.normpath(posixpath.join("/", cwd))
    parts = [p for p in cwd.split("/") if p]
    prefixes = [NEWROOT + "/" + "/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    checks = " && ".join(f"[ ! -L {shlex.quote(p)} ] && [ -d {shlex.quote(p)} ]"
                         for p in prefixes) or "true"
    where = prefixes[-1] if prefixes else NEWROOT
    enter = ["/bin/busybox", "setpriv", "--nnp", "/bin/busybox", "nsenter", "-F",
             f"-r{NEWROOT}", f"-w{where}", "-S", str(uid), "-G", str(gid), "--", *argv]
    return (f"{exports}{checks} || {{ echo no such directory in the sandbox, or one through "
            f"a symlink: {shlex.quote(cwd)} >&2; exit 126; }}\nexec {shlex.join(enter)}\n")


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One conversation at a time per VM (the service and CLIs may all want one)."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode() or "-"


def _unb64(text: str) -> bytes:
    return b"" if text == "-" else base64.b64decode(text)


def run(path: Path, script: str, stdin: bytes = b"", timeout: float = 60,
        connect_timeout: float = 30) -> tuple[int, bytes, bytes]:
    """Run a shell script in the guest: (exit code, stdout, stderr)."""
    request_id = secrets.token_hex(6)
    limit = max(int(timeout + 0.999), 1)
    line = f"{request_id} {_b64(script.encode())} {_b64(stdin)} {limit}\n".encode()
    with _exclusive(path):
        conn = _connect(path, connect_timeout)
        with conn:
            conn.settimeout(limit + 30)
            conn.sendall(line)
            reader = conn.makefile("rb")
            for raw in reader:
                parts = raw.decode(errors="replace").split()
                if len(parts) == 4 and parts[0] == request_id:
                    return int(parts[1]), _unb64(parts[2]), _unb64(parts[3])
    raise RuntimeFailure("the microVM's agent closed the connection without an answer")


def _connect(path: Path, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(path))
            return conn
        except OSError as e:
            conn.close()
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"cannot reach the microVM's agent at {path}: {e}") from None
            time.sleep(0.02)


def wait_ready(path: Path, timeout: float = 60) -> None:
    """Until the agent answers a no-op."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            code, _, _ = run(path, "true\n", timeout=5, connect_timeout=1)
            if code == 0:
                return
        except (RuntimeFailure, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"the microVM's agent did not answer within {timeout:.0f} s")
        time.sleep(0.05)


def main() -> int:
    path, request_file = Path(sys.argv[1]), Path(sys.argv[2])
    request = json.loads(request_file.read_text())
    stdin = b"" if os.isatty(0) else sys.stdin.buffer.read()
    script = script_for(request["argv"], request["env"], request["cwd"], request["uid"],
                        request["gid"])
    code, out, err = run(path, script, stdin, timeout=request.get("timeout", 86400))
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(err)
    sys.stderr.buffer.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
