"""The audit log from the command line, as a security team uses it: signed heads, verify
(intact and tampered), tail -f, summary, exports, and OTLP export to a live receiver."""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import killed_after
from tests.harness import SANDGATE, Gateway, wait_for
from tests.topology import Topology

pytestmark = pytest.mark.integration


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP logs endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(inner) -> None:
                body = inner.rfile.read(int(inner.headers["content-length"]))
                self.received.append({"path": inner.path, "body": json.loads(body)})
                inner.send_response(200)
                inner.send_header("content-length", "2")
                inner.end_headers()
                inner.wfile.write(b"{}")

            def log_message(inner, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def server_bind(self) -> None:  # no getfqdn
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]


@pytest.fixture
def signed_gateway(tmp_path: Path, topology: Topology) -> Iterator[tuple[Gateway, Receiver]]:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    key = tmp_path / "audit.key"
    try:
        with killed_after(tmp_path / "gw", topology) as gw:
            created = gw.sandgate("audit", "keygen", str(key))
            assert created.returncode == 0, created.stderr
            gw.extra_env.update(SANDGATE_AUDIT_SIGNING_KEY_FILE=str(key),
                                SANDGATE_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_port}")
            gw.start()
            yield gw, receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


def lookup(gw: Gateway, name: str) -> None:
    result = gw.run(gw.policy("none", []), "/usr/bin/python3", "-c",
                    f"import socket\ntry: socket.gethostbyname('{name}')\nexcept OSError: pass")
    assert result.returncode == 0, result.stderr




def test_signed_verify_tail_summary_export_and_otlp(
        signed_gateway: tuple[Gateway, Receiver], tmp_path: Path) -> None:
    gw, receiver = signed_gateway
    earlier = f"cli-{secrets.token_hex(4)}.upstream.test"
    lookup(gw, earlier)
    tail = subprocess.Popen([*SANDGATE, "audit", "tail", "-f", "-n", "1", "--json",
                             "--host=cli-*"], env=gw.env, stdout=subprocess.PIPE, text=True)
    try:
        assert tail.stdout is not None
        assert json.loads(tail.stdout.readline())["host"] == earlier   # the last row first
        name = f"cli-{secrets.token_hex(4)}.upstream.test"
        lookup(gw, name)
        line = json.loads(tail.stdout.readline())                      # then each new one
        assert (line["host"], line["decision"], line["protocol"]) == (name, "deny", "dns")
    finally:
        tail.terminate()
        tail.communicate()

    records = wait_for(lambda: [r for post in receiver.received
                                for rl in post["body"]["resourceLogs"]
                                for sl in rl["scopeLogs"] for r in sl["logRecords"]
                                if name in r["body"]["stringValue"]], timeout=15)
    assert all(post["path"] == "/v1/logs" for post in receiver.received)
    attributes = {a["key"]: a["value"] for a in records[0]["attributes"]}
    assert attributes["sandgate.host"] == {"stringValue": name}
    assert records[0]["severityText"] == "WARN"

    summary = json.loads(gw.sandgate("audit", "summary", "--json").stdout)
    assert {"host": name, "count": 1} in summary["top_denied_hosts"]  # one A query
    ocsf = [json.loads(x) for x in gw.sandgate("audit", "export", "--format=ocsf",
                                               f"--host={name}").stdout.splitlines()]
    assert [(e["class_uid"], e["disposition"], e["query"]["hostname"]) for e in ocsf] == \
        [(4003, "Blocked", name)]
    csv_lines = gw.sandgate("audit", "export", "--format=csv", f"--host={name}").stdout
    assert len(csv_lines.splitlines()) == 2

    gw.stop()  # a clean stop signs the final head and publishes it
    public = str(tmp_path / "audit.key.pub")
    heads = str(gw.home / "audit-heads.jsonl")
    intact = gw.sandgate("audit", "verify", f"--public-key={public}", f"--heads={heads}")
    assert intact.returncode == 0, intact.stdout
    assert "signed head(s) in the database" in intact.stdout
    assert "head(s) from --heads" in intact.stdout
    exported = [r for post in receiver.received for rl in post["body"]["resourceLogs"]
                for sl in rl["scopeLogs"] for r in sl["logRecords"]
                if r["body"]["stringValue"].startswith("audit head ")]
    assert exported, "no chain head reached the OTLP collector"

    db = sqlite3.connect(gw.home / "sandgate.db")
    row_id, seq = db.execute("SELECT id, seq FROM audit_event WHERE host = ? ORDER BY seq "
                             "LIMIT 1", (name,)).fetchone()
    db.execute("UPDATE audit_event SET decision = 'allow' WHERE id = ?", (row_id,))
    db.commit()
    tampered = gw.sandgate("audit", "verify", f"--public-key={public}")
    assert tampered.returncode == 1
    assert f"row id {row_id} (gateway" in tampered.stdout and f"seq {seq}) was changed" in \
        tampered.stdout

    # the tail cut off at the changed row, and the signed heads deleted with it: only the
    # heads kept outside the database tell
    db.execute("DELETE FROM audit_event WHERE seq >= ?", (seq,))
    db.execute("DELETE FROM audit_head")
    db.commit()
    db.close()
    alone = gw.sandgate("audit", "verify", f"--public-key={public}")
    assert alone.returncode == 0, alone.stdout
    outside = gw.sandgate("audit", "verify", f"--public-key={public}", f"--heads={heads}")
    assert outside.returncode == 1
    assert f"ends at seq {seq - 1}, but {heads} holds a head" in outside.stdout
