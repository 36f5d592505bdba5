"""The Python client retries a 503 that carries Retry-After (the gateway is starting) within
its deadline, against a real HTTP server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from gateway.client import Client, SandgateAPIError
from tests.harness import free_port


@pytest.fixture
def starting_gateway() -> Iterator[tuple[str, list[int]]]:
    """Answers the first create 503 + Retry-After (as a gateway whose workers are not up
    yet), the next 201."""
    app = FastAPI()
    calls: list[int] = []

    @app.post("/v1/sandboxes")
    def create() -> JSONResponse:
        calls.append(1)
        if len(calls) == 1:
            return JSONResponse({"detail": "0 of 2 proxy workers are ready"}, 503,
                                headers={"retry-after": "1"})
        return JSONResponse({"id": "abcd1234", "state": "running"}, 201)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{port}", calls
    server.should_exit = True
    thread.join()


def test_a_starting_gateway_is_retried(starting_gateway: tuple[str, list[int]]) -> None:
    url, calls = starting_gateway
    with Client(url) as client:
        sandbox = client.create("web")
    assert sandbox.id == "abcd1234" and len(calls) == 2


def test_no_retry_past_the_deadline(starting_gateway: tuple[str, list[int]]) -> None:
    url, calls = starting_gateway
    with Client(url, retry_deadline=0.5) as client, \
            pytest.raises(SandgateAPIError, match="503: 0 of 2 proxy workers"):
        client.create("web")
    assert len(calls) == 1
