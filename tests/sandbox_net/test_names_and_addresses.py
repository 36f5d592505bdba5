from __future__ import annotations

import ipaddress

import pytest

from sandbox_net.addressing import MAX_SLOTS, addresses_for
from sandbox_net.names import IFNAMSIZ, Naming, new_sandbox_id


def test_names_fit_interface_limits() -> None:
    naming = Naming("abcd")
    sandbox_id = new_sandbox_id()
    assert len(naming.host_link(sandbox_id)) <= IFNAMSIZ
    assert len(naming.peer_link(sandbox_id)) <= IFNAMSIZ
    assert naming.id_from_link(naming.host_link(sandbox_id)) == sandbox_id
    assert naming.id_from_netns(naming.netns(sandbox_id)) == sandbox_id
    assert naming.id_from_netns("abcd-inet") is None
    assert naming.id_from_link("abcdi0") is None


@pytest.mark.parametrize("prefix", ["", "ABC", "toolong", "1ab", "a-b"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Naming(prefix)


def test_default_names() -> None:
    naming = Naming()
    assert (naming.table, naming.link_glob, naming.netns("0a1b2c3d")) == \
        ("sandgate", "sgh-*", "sg-0a1b2c3d")


def test_slots_never_overlap() -> None:
    links, synthetic = set(), set()
    for slot in (0, 1, MAX_SLOTS - 1):
        a = addresses_for(slot)
        assert a.host_ip in a.link and a.sandbox_ip in a.link
        assert a.synthetic.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
        links.add(a.link)
        synthetic.add(a.synthetic)
    assert len(links) == 3 and len(synthetic) == 3
    with pytest.raises(ValueError):
        addresses_for(MAX_SLOTS)
