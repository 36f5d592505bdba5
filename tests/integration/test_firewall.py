"""The nft table, against the real kernel: applied atomically, verified, tamper detected."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from sandbox_net import firewall
from sandbox_net.errors import FirewallError
from tests.conftest import new_prefix


@pytest.fixture
def spec(require_root: None) -> Iterator[firewall.FirewallSpec]:
    prefix = new_prefix()
    spec = firewall.FirewallSpec(f"sandgate_{prefix}", f"{prefix}h-*", 15901, 15953)
    try:
        yield spec
    finally:
        subprocess.run(["nft", "delete", "table", "inet", spec.table], capture_output=True)


def rules(spec: firewall.FirewallSpec) -> list[dict[str, object]]:
    out = subprocess.run(["nft", "-j", "list", "table", "inet", spec.table],
                         capture_output=True, text=True, check=True).stdout
    return [i["rule"] for i in json.loads(out)["nftables"] if "rule" in i]


def test_apply_verify_remove(spec: firewall.FirewallSpec) -> None:
    assert not firewall.is_present(spec)
    firewall.apply(spec)
    firewall.verify(spec)
    assert len(rules(spec)) == 11
    firewall.apply(spec)  # idempotent: replaces, never duplicates
    assert len(rules(spec)) == 11
    firewall.remove(spec)
    assert not firewall.is_present(spec)


def test_verify_detects_a_deleted_rule(spec: firewall.FirewallSpec) -> None:
    firewall.apply(spec)
    handle = next(r["handle"] for r in rules(spec) if r.get("comment") == "drop-from-sandbox")
    subprocess.run(["nft", "delete", "rule", "inet", spec.table, "forward", "handle",
                    str(handle)], check=True)
    with pytest.raises(FirewallError, match="chain forward holds rules"):
        firewall.verify(spec)


def test_pins_survive_a_reinstall_and_a_lost_one_is_detected(
        spec: firewall.FirewallSpec) -> None:
    link = spec.link_glob.replace("*", "a")
    firewall.apply(spec)
    firewall.pin(spec, link, "10.77.0.2")
    firewall.verify(spec, [(link, "10.77.0.2")])
    firewall.unpin(spec, link, "10.77.0.2")
    firewall.unpin(spec, link, "10.77.0.2")        # idempotent
    with pytest.raises(FirewallError, match="not pinned"):
        firewall.verify(spec, [(link, "10.77.0.2")])
    firewall.apply(spec, [(link, "10.77.0.2")])      # as the watchdog reinstalls it
    firewall.verify(spec, [(link, "10.77.0.2")])


def test_verify_detects_a_missing_table(spec: firewall.FirewallSpec) -> None:
    with pytest.raises(FirewallError, match="is missing"):
        firewall.verify(spec)


def test_a_bad_document_applies_nothing(spec: firewall.FirewallSpec) -> None:
    broken = firewall.FirewallSpec(spec.table, spec.link_glob, 70000, 2)  # port out of range
    with pytest.raises(FirewallError, match="nft rejected"):
        firewall.apply(broken)
    assert not firewall.is_present(spec)


def test_render_matches_only_our_links() -> None:
    doc = firewall.render(firewall.FirewallSpec("sandgate", "sgh-*", 15001, 15053))
    assert doc.startswith("table inet sandgate {}\ndelete table inet sandgate\n")
    assert 'iifname "sgh-*" meta nfproto ipv4 meta l4proto tcp redirect to :15001' in doc
    assert 'oifname "sgh-*" counter drop comment "drop-to-sandbox"' in doc
