"""HostNetwork against the real kernel: the firewall watchdog's check and reinstall never race
a sandbox being wired (a reinstall from a stale list of pins would cut that link off)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.db import make_engine
from sandbox_net import firewall, links
from sandbox_net.errors import NetError
from sandbox_net.names import Naming
from sandbox_net.wiring import HostNetwork
from tests.conftest import force_clean, new_prefix


@pytest.fixture
def network(require_root: None, tmp_path: Path) -> Iterator[HostNetwork]:
    naming = Naming(new_prefix())
    spec = firewall.FirewallSpec(naming.table, naming.link_glob, 15901, 15953)
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    net = HostNetwork(engine, naming, spec, gateway_id="gw", host_id="host")
    net.install_rules()
    try:
        yield net
    finally:
        force_clean(naming.prefix)
        engine.dispose()


def pinned(net: HostNetwork) -> set[str]:
    """The links the kernel's pin set holds."""
    return {link for link, _address in firewall.pinned(net.rules)}


def test_a_check_while_a_sandbox_is_being_wired_keeps_every_pin(
        network: HostNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    network.wire("aaaaaaaa")
    created, resume = threading.Event(), threading.Event()
    create = links.create

    def paused_create(*args: Any) -> links.SandboxLink:
        link = create(*args)
        created.set()
        assert resume.wait(30)
        return link

    monkeypatch.setattr(links, "create", paused_create)
    second = threading.Thread(target=network.wire, args=("bbbbbbbb",))
    second.start()
    try:
        assert created.wait(30)      # a slot and a link, no pin yet
        assert network.restore_rules() is None      # nothing differs: no reinstall
    finally:
        resume.set()
        second.join(30)
    names = {network.naming.host_link(i) for i in ("aaaaaaaa", "bbbbbbbb")}
    assert pinned(network) == names
    firewall.remove(network.rules)                  # an operator's mistake
    assert "missing" in (network.restore_rules() or "")
    assert pinned(network) == names                 # reinstalled with both pins
    firewall.pin(network.rules, network.naming.host_link("aaaaaaaa"), "10.254.254.254")
    assert "not in force" in (network.restore_rules() or "")   # a second source: removed
    assert pinned(network) == names
    assert network.restore_rules() is None
    network.unwire("aaaaaaaa")
    network.unwire("bbbbbbbb")
    assert pinned(network) == set()
    assert network.restore_rules() is None


def test_a_restarted_gateway_adopts_a_wired_sandbox_and_pins_it_again(
        network: HostNetwork) -> None:
    wired = network.wire("cccccccc")
    inside = subprocess.Popen(["nsenter", f"--net={wired.netns_path}", "sleep", "60"])
    stranger = subprocess.Popen(["sleep", "60"])
    name = Path(wired.netns_path)

    def names_holder() -> bool:
        return os.path.samestat(name.stat(), os.stat(f"/proc/{inside.pid}/ns/net"))

    try:
        # a new process: nothing pinned in its table yet, the namespace's name gone (as in a
        # restarted systemd unit's mount namespace)
        restarted = HostNetwork(network.engine, network.naming, network.rules,
                                gateway_id="gw", host_id="host")
        restarted.install_rules()
        assert pinned(restarted) == set()
        subprocess.run(["ip", "netns", "del", name.name], check=True)
        with pytest.raises(NetError, match="no process of it is left"):
            restarted.adopt("cccccccc")
        with pytest.raises(NetError, match=f"process {stranger.pid} is not in"):
            restarted.adopt("cccccccc", stranger.pid)
        assert not name.exists()
        assert restarted.adopt("cccccccc", inside.pid) == wired
        assert names_holder()
        assert pinned(restarted) == {network.naming.host_link("cccccccc")}
        assert restarted.restore_rules() is None      # the watchdog sees the pin in force
        # the name an empty mount point (its bind mount stayed in the old mount namespace),
        # then over another namespace: never trusted, named again from the holder
        subprocess.run(["umount", str(name)], check=True)
        assert name.exists() and name.stat().st_size == 0 and not names_holder()
        assert restarted.adopt("cccccccc", inside.pid) == wired
        assert names_holder()
        subprocess.run(["umount", str(name)], check=True)
        subprocess.run(["mount", "--bind", f"/proc/{stranger.pid}/ns/net", str(name)],
                       check=True)
        with pytest.raises(NetError, match=f"process {stranger.pid} is not in"):
            restarted.adopt("cccccccc", stranger.pid)   # the holder is checked, name or not
        assert restarted.adopt("cccccccc", inside.pid) == wired
        assert names_holder()
        with pytest.raises(NetError, match="slot is not this gateway's"):
            restarted.adopt("dddddddd", inside.pid)
    finally:
        for process in (inside, stranger):
            process.kill()
            process.wait()
