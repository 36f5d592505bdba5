"""Python client of the control API.

    from gateway.client import Client

    client = Client("http://127.0.0.1:8700", token="sgt_...")
    with client.create(policy="pypi", image="base", secrets=["GITHUB_TOKEN"],
                       ttl_seconds=600) as sandbox:
        result = sandbox.exec(["python3", "-c", "print('hi')"])   # in /workspace, as uid 1000
        print(result.exit_code, result.stdout)
        for row in sandbox.audit():
            print(row["decision"], row["host"])
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

__all__ = ["Client", "ExecResult", "Sandbox", "SandgateAPIError"]


class SandgateAPIError(Exception):
    def __init__(self, status: int, detail: str, hint: str | None = None) -> None:
        super().__init__(f"{status}: {detail}" + (f" ({hint})" if hint else ""))
        self.status = status
        self.detail = detail
        self.hint = hint


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8700", token: str | None = None,
                 timeout: float = 120.0, *, uds: str | None = None,
                 retry_deadline: float = 30.0) -> None:
        """`uds`: the gateway's control socket instead of `url` (local administrator, no
        token needed). `retry_deadline`: how long a request answered 503 with Retry-After
        (the gateway is starting) is retried."""
        self.retry_deadline = retry_deadline
        headers = {"authorization": f"Bearer {token}"} if token else {}
        transport = httpx.HTTPTransport(uds=uds) if uds else None
        self._http = httpx.Client(base_url="http://sandgate" if uds else url, headers=headers,
                                  timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            raise SandgateAPIError(response.status_code, str(body.get("detail")),
                                   body.get("hint"))
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, repeated while the gateway answers 503 with Retry-After (it is not
        ready yet, and did nothing) and the deadline allows."""
        deadline = time.monotonic() + self.retry_deadline
        while True:
            response = self._http.request(method, path, **kwargs)
            wait = _retry_after(response)
            if wait is None or time.monotonic() + wait > deadline:
                return response
            time.sleep(wait)

    # sandboxes
    def create(self, policy: str, *, runtime: str = "gvisor", image: str | None = None,
               user: str | None = None, secrets: list[str] | None = None,
               env: dict[str, str] | None = None, **limits: Any) -> Sandbox:
        """A new sandbox on `image` (default `base`), its commands run as `user` (default the
        image's non-root user, else uid 1000). `limits`: ttl_seconds, idle_timeout_seconds,
        memory_mb, cpus, max_pids, disk_mb."""
        body = {"policy": policy, "runtime": runtime, "secrets": secrets or [],
                "env": env or {}, **limits}
        if image is not None:
            body["image"] = image
        if user is not None:
            body["user"] = user
        return Sandbox(self, self.request("POST", "/v1/sandboxes", json=body))

    def sandboxes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/sandboxes")
        return result

    def sandbox(self, sandbox_id: str) -> Sandbox:
        return Sandbox(self, self.request("GET", f"/v1/sandboxes/{sandbox_id}"))

    # images
    def images(self) -> list[dict[str, Any]]:
        """The images sandboxes can run on (built and imported with `sandgate image`)."""
        result: list[dict[str, Any]] = self.request("GET", "/v1/images")
        return result

    # policies and secrets
    def put_policy(self, name: str, yaml: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", f"/v1/policies/{name}",
                                              json={"yaml": yaml})
        return result

    def test_policy(self, name: str, method: str, url: str,
                    headers: dict[str, str] | None = None, body_size: int = 0) -> dict[str, Any]:
        """What the policy would do with the request: decision, rule, reason, the gateway's
        steps, and on a denial the nearest rules (as `sandgate policy test`)."""
        result: dict[str, Any] = self.request("POST", f"/v1/policies/{name}/test", json={
            "method": method, "url": url, "headers": headers or {}, "body_size": body_size})
        return result

    def replay_policy(self, name: str, since: str = "7d", sandboxes: list[str] | None = None,
                      yaml: str | None = None) -> dict[str, Any]:
        """Recorded requests judged by the stored policy `name` (or by `yaml`, not stored):
        what would newly be denied or allowed (as `sandgate policy replay --json`)."""
        body: dict[str, Any] = {"since": since, "sandboxes": sandboxes or []}
        if yaml is not None:
            body["yaml"] = yaml
        result: dict[str, Any] = self.request("POST", f"/v1/policies/{name}/replay", json=body)
        return result

    def put_secret(self, name: str, value: str) -> int:
        return int(self.request("PUT", f"/v1/secrets/{name}", json={"value": value})["version"])

    def put_provider(self, name: str, provider: str, fields: dict[str, str]) -> int:
        """A secret the gateway mints from `provider` (oauth2_client_credentials,
        oauth2_refresh_token, github_app, google_service_account) or presents
        (mtls_client_cert), configured by `fields` (docs/POLICY.md)."""
        return int(self.request("PUT", f"/v1/secrets/{name}",
                                json={"provider": provider, "fields": fields})["version"])

    def secrets(self) -> list[dict[str, Any]]:
        """Every secret's metadata, and for a provider its state (last refresh, expiry,
        error); never a value."""
        result: list[dict[str, Any]] = self.request("GET", "/v1/secrets")
        return result

    # audit
    def audit(self, path: str = "/v1/audit", **filters: Any) -> Iterator[dict[str, Any]]:
        """Every matching audit row, oldest first, following the cursor."""
        params = {k: v for k, v in filters.items() if v is not None}
        while True:
            page = self.request("GET", path, params=params)
            yield from page["rows"]
            if page["next_cursor"] is None:
                return
            params["cursor"] = page["next_cursor"]


def _retry_after(response: httpx.Response) -> float | None:
    if response.status_code != 503:
        return None
    try:
        return min(max(float(response.headers["retry-after"]), 0.1), 10.0)
    except (KeyError, ValueError):
        return None


class Sandbox:
    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self._client = client
        self.info = info
        self.id: str = info["id"]

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.delete()

    def refresh(self) -> dict[str, Any]:
        self.info = self._client.request("GET", f"/v1/sandboxes/{self.id}")
        return self.info

    def exec(self, cmd: list[str], *, stdin: str | None = None, cwd: str | None = None,
             env: dict[str, str] | None = None, timeout: float = 60) -> ExecResult:
        body = {"cmd": cmd, "stdin": stdin, "cwd": cwd, "env": env or {},
                "timeout_seconds": timeout}
        return ExecResult(**self._client.request("POST", f"/v1/sandboxes/{self.id}/exec",
                                                 json=body))

    def exec_stream(self, cmd: list[str], *, stdin: str | None = None, cwd: str | None = None,
                    env: dict[str, str] | None = None,
                    timeout: float = 60) -> Iterator[tuple[str, Any]]:
        """("stdout" | "stderr", bytes) as output arrives, then ("exit", exit code)."""
        body = {"cmd": cmd, "stdin": stdin, "cwd": cwd, "env": env or {},
                "timeout_seconds": timeout}
        with self._client._http.stream("POST", f"/v1/sandboxes/{self.id}/exec/stream",
                                       json=body) as response:
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    data = json.loads(line[6:])
                    if event == "exit":
                        yield "exit", data["exit_code"]
                    else:
                        yield event, base64.b64decode(data["data"])

    def upload(self, path: str, content: bytes) -> None:
        self._client.request("PUT", f"/v1/sandboxes/{self.id}/files", json={
            "path": path, "content_base64": base64.b64encode(content).decode()})

    def download(self, path: str) -> bytes:
        data: bytes = self._client.request("GET", f"/v1/sandboxes/{self.id}/files",
                                           params={"path": path})
        return data

    def files(self, path: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._client.request(
            "GET", f"/v1/sandboxes/{self.id}/files", params={"path": path, "list": "true"})
        return result

    def audit(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._client.audit(f"/v1/sandboxes/{self.id}/audit", **filters)

    def delete(self) -> None:
        try:
            self._client.request("DELETE", f"/v1/sandboxes/{self.id}")
        except SandgateAPIError as e:
            if e.status != 404:
                raise
