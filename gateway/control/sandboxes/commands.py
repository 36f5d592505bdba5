"""Commands and files inside a running sandbox, through its runtime's exec."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.schemas import ExecRequest, ExecResult, FileUpload
from gateway.errors import BadRequest, NotFound
from sandbox_net.runtime.base import bounded, run_exec

LIST_SCRIPT = ('for f in "$1"/* "$1"/.[!.]*; do [ -e "$f" ] || continue; '
               'if [ -d "$f" ]; then t=dir; s=-; else t=file; s=$(wc -c < "$f"); fi; '
               'printf "%s\\t%s\\t%s\\n" "$t" "$s" "${f##*/}"; done')


class Commands:
    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes

    def _run(self, sandbox_id: str, argv: list[str], *, stdin: bytes | None = None,
             env: dict[str, str] | None = None, cwd: str | None = None,
             timeout: float = 120) -> Any:
        """`argv` in the sandbox; relative paths are relative to its working directory."""
        runtime, spec = self.sandboxes.running(sandbox_id)
        return run_exec(runtime, spec, argv, stdin=stdin, env=env or {}, cwd=cwd,
                        timeout=timeout)

    def exec(self, sandbox_id: str, request: ExecRequest) -> ExecResult:
        self.sandboxes.touch(sandbox_id)
        result = self._run(sandbox_id, request.cmd,
                           stdin=request.stdin.encode() if request.stdin is not None else None,
                           env=request.env, cwd=request.cwd, timeout=request.timeout_seconds)
        return ExecResult(exit_code=result.exit_code,
                          stdout=result.stdout.decode(errors="replace"),
                          stderr=result.stderr.decode(errors="replace"),
                          timed_out=result.timed_out)

    async def exec_stream(self, sandbox_id: str,
                          request: ExecRequest) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs: stdout/stderr chunks (base64) as they come, then exit."""
        self.sandboxes.touch(sandbox_id)
        runtime, spec = self.sandboxes.running(sandbox_id)
        command = runtime.exec_command(spec, bounded(request.cmd, request.timeout_seconds),
                                       env=request.env, cwd=request.cwd)
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert process.stdin and process.stdout and process.stderr
        process.stdin.write((request.stdin or "").encode())
        process.stdin.close()
        events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

        async def pump(name: str, stream: asyncio.StreamReader) -> None:
            while chunk := await stream.read(65536):
                await events.put((name, {"data": base64.b64encode(chunk).decode()}))
            await events.put(None)

        pumps = [asyncio.ensure_future(pump("stdout", process.stdout)),
                 asyncio.ensure_future(pump("stderr", process.stderr))]
        finished, timed_out = 0, False
        deadline = time.monotonic() + request.timeout_seconds
        try:
            while finished < 2:
                try:
                    item = await asyncio.wait_for(events.get(),
                                                  max(deadline - time.monotonic(), 0.01))
                except TimeoutError:
                    timed_out = True
                    process.kill()
                    break
                if item is None:
                    finished += 1
                else:
                    yield item
            code = await process.wait()
        finally:
            for task in pumps:
                task.cancel()
            if process.returncode is None:
                process.kill()
        yield "exit", {"exit_code": 124 if timed_out else code, "timed_out": timed_out}

    def upload(self, sandbox_id: str, upload: FileUpload) -> None:
        try:
            data = base64.b64decode(upload.content_base64, validate=True)
        except ValueError:
            raise BadRequest("content_base64 is not valid base64") from None
        result = self._run(sandbox_id, ["/bin/sh", "-c", 'mkdir -p "$(dirname "$1")" && '
                                        'cat > "$1"', "sh", upload.path], stdin=data)
        if result.exit_code != 0:
            raise BadRequest(f"cannot write {upload.path}: "
                             f"{result.stderr.decode(errors='replace').strip()}",
                             "the sandbox's root is read-only; write below /workspace or /tmp")

    def download(self, sandbox_id: str, path: str) -> bytes:
        result = self._run(sandbox_id, ["/bin/cat", "--", path])
        if result.exit_code != 0:
            raise NotFound(f"cannot read {path}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
        data: bytes = result.stdout
        return data

    def list_files(self, sandbox_id: str, path: str) -> list[dict[str, Any]]:
        result = self._run(sandbox_id, ["/bin/sh", "-c", f'[ -d "$1" ] || exit 3; {LIST_SCRIPT}',
                                        "sh", path], timeout=60)
        if result.exit_code != 0:
            raise NotFound(f"{path} is not a directory in the sandbox")
        entries = []
        for line in result.stdout.decode(errors="replace").splitlines():
            kind, size, name = line.split("\t", 2)
            entries.append({"name": name, "type": kind,
                            "size": int(size) if kind == "file" and size.isdigit() else None})
        return entries
