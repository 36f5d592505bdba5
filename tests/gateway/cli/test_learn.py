"""`sandgate policy learn` and `policy replay` over an audit log in the data directory (no
gateway running: they read the database directly)."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.audit.writer import AuditWriter
from gateway.db import make_engine
from tests.gateway.cli.conftest import Sandgate


def record(home: Path) -> None:
    """A monitor-mode recording of one sandbox: two GETs and a POST, and a DNS lookup."""
    home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{home / 'sandgate.db'}")
    writer = AuditWriter(engine, gateway_id="gw1")
    writer.start()
    common = dict(decision="would_deny", reason="no_matching_rule", scheme="https",
                  host="api.example.com", port=443, sandbox_id="sb1", policy="learning")
    writer.record(protocol="dns", method="A", **{**common, "port": 53})
    for method, path in (("GET", "/items/1"), ("GET", "/items/2"), ("POST", "/items")):
        writer.record(protocol="h2", method=method, path=path, **common)
    writer.flush()
    writer.close()
    engine.dispose()


def test_learn_then_replay(sandgate: Sandgate, tmp_path: Path) -> None:
    record(tmp_path / "home")
    learned = tmp_path / "learned.yaml"
    result = sandgate("policy", "learn", "--sandbox", "sb1", "-o", str(learned))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["2 rule(s) from 3 request(s)", f"wrote {learned}"]
    text = learned.read_text()
    assert "# learned by sandgate policy learn from sandbox sb1, " in text
    assert sandgate("policy", "check", "--strict", str(learned)).returncode == 0

    same = sandgate("policy", "replay", str(learned), "--since", "1h")
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[0].endswith(
        ": 0 newly denied, 0 newly allowed, 3 unchanged")

    narrowed = tmp_path / "narrowed.yaml"
    narrowed.write_text(text.replace("methods: [POST]", "methods: [PUT]"))
    less = sandgate("policy", "replay", str(narrowed), "--sandbox", "sb1", "--json")
    assert less.returncode == 1
    report = json.loads(less.stdout)
    assert report["newly_denied_count"] == 1
    assert report["newly_denied"][0]["samples"] == ["POST /items"]


def test_learn_needs_a_scope_and_replay_a_valid_time(sandgate: Sandgate, tmp_path: Path) -> None:
    record(tmp_path / "home")
    bare = sandgate("policy", "learn")
    assert (bare.returncode, bare.stderr) == (
        2, "sandgate: error: say which requests to learn from (pass --sandbox ID or "
           "--since 2h)\n")
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nname: p\nrules: []\n")
    late = sandgate("policy", "replay", str(policy), "--since", "yesterday")
    assert late.returncode == 2 and "use ISO 8601" in late.stderr
