"""The nft document as rendered (tests/integration/test_firewall.py applies it to a kernel)."""

from __future__ import annotations

from sandbox_net import firewall


def test_one_atomic_document_that_replaces_any_older_table() -> None:
    doc = firewall.render(firewall.FirewallSpec("sandgate_t", "th-*", 15001, 15053))
    lines = doc.splitlines()
    # create-then-delete first: `nft -f` applies it whole whether the table existed or not
    assert lines[:3] == ["table inet sandgate_t {}", "delete table inet sandgate_t",
                         "table inet sandgate_t {"]
    assert 'iifname "th-*" meta nfproto ipv4 udp dport 53 redirect to :15053' in doc
    assert 'iifname "th-*" meta nfproto ipv4 meta l4proto tcp redirect to :15001' in doc
    assert doc.count("counter drop") == 5   # spoofed source, DNS flood, input, forward x2


def test_each_link_is_pinned_to_its_address_before_anything_else_sees_it() -> None:
    doc = firewall.render(firewall.FirewallSpec("sandgate_t", "th-*", 15001, 15053),
                          [("th-a", "10.77.0.2"), ("th-b", "10.77.0.6")])
    assert 'elements = { "th-a" . 10.77.0.2, "th-b" . 10.77.0.6 };' in doc
    guard = doc.index("chain guard")
    assert guard < doc.index("chain prerouting")
    assert "type filter hook prerouting priority raw;" in doc[guard:]
    assert ('iifname "th-*" meta nfproto ipv4 iifname . ip saddr != @pins counter drop '
            'comment "spoofed-source"') in doc


def test_connections_are_spread_over_the_workers_by_a_hash() -> None:
    spec = firewall.FirewallSpec("sandgate_t", "th-*", 15001, 15053, workers=3)
    assert spec.transparent_ports == [15001, 15002, 15003]
    assert ("redirect to :jhash ip saddr . tcp sport mod 3 map { 0 : 15001, 1 : 15002, "
            "2 : 15003 }") in firewall.render(spec)
    assert "tcp dport { 15001, 15002, 15003 } accept" in firewall.render(spec)
