"""Network namespaces and veth pairs, through pyroute2's public API.

A sandbox link is created *down*; `bring_up` is a separate step that callers take only after
the firewall table is verified (fail closed: the host forwards IP packets).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, netns

from sandbox_net.addressing import SlotAddresses
from sandbox_net.errors import NetError
from sandbox_net.names import Naming

NETNS_DIR = Path("/run/netns")
IFF_UP = 0x1


@dataclass(frozen=True, slots=True)
class SandboxLink:
    sandbox_id: str
    netns: str                  # a name under /run/netns, or the path of someone else's
    host_link: str
    addresses: SlotAddresses
    ifname: str = "eth0"        # the sandbox's end

    @property
    def netns_path(self) -> str:
        return self.netns if self.netns.startswith("/") else str(NETNS_DIR / self.netns)


@dataclass(frozen=True, slots=True)
class NetnsRef:
    """A namespace someone else made (a pod's): its path, and the identity (st_dev, st_ino)
    the caller saw there. The path alone could mean another namespace in the gateway's view
    (a /proc/PID path read in another PID namespace, a name removed and made again)."""

    path: str
    dev: int
    ino: int


@contextlib.contextmanager
def opened(netns: NetnsRef) -> Iterator[str]:
    """Open the namespace once, check it is the one the caller saw, and yield a path to that
    open file (/proc/self/fd/N): every step then acts on that namespace, whatever happens to
    `netns.path` meanwhile. Raises NetError."""
    if not netns.path.startswith("/"):
        raise NetError(f"no network namespace at {netns.path!r}")
    try:
        fd = os.open(netns.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetError(f"no network namespace at {netns.path!r}: {e.strerror}") from None
    try:
        found = os.fstat(fd)
        if (found.st_dev, found.st_ino) != (netns.dev, netns.ino):
            raise NetError(f"{netns.path} is not the namespace the container runtime gave "
                           "(it was replaced, or the path names another process here: the "
                           "gateway must see the node's /proc and /run/netns)")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


@contextlib.contextmanager
def _netlink_errors(what: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as e:
        raise NetError(f"{what}: {os.strerror(e.code)} (netlink error {e.code})") from None
    except OSError as e:
        raise NetError(f"{what}: {e.strerror or e}") from None


def _in_netns[T](path: str, action: Callable[[], T]) -> T:
    """Run `action` in a helper thread switched into the namespace at `path` (setns is per
    thread, and the thread ends there: the process's other threads never change theirs).
    A netlink socket opened by `action` belongs to that namespace: cheaper than pyroute2's
    IPRoute(netns=...), which forks the whole gateway to open one. The namespace must
    exist: none is created (pyroute2's setns would create a missing one)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.setns(fd, os.CLONE_NEWNET)
            finally:
                os.close(fd)
            result.append(action())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=target, name="netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _disable_ipv6() -> None:
    # The sandbox speaks IPv4 only: the gateway's rules and synthetic DNS are IPv4, and an
    # IPv6 path would be a way around them.
    for conf in ("all", "default", "lo"):
        Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6").write_text("1")


def _add_netns(name: str) -> None:
    """`ip netns add`: pyroute2's netns.create forks the calling process, which costs tens of
    milliseconds in a gateway of a few hundred megabytes; iproute2 is spawned, not forked."""
    try:
        result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                                check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetError(f"creating namespace {name}: {e}") from None
    if result.returncode != 0:
        raise NetError(f"creating namespace {name}: {result.stderr.strip()}")


def create(naming: Naming, sandbox_id: str, addresses: SlotAddresses) -> SandboxLink:
    """Create namespace and veth pair, addressed, loopback up, both link ends still down."""
    link = SandboxLink(sandbox_id, naming.netns(sandbox_id), naming.host_link(sandbox_id),
                       addresses)
    peer = naming.peer_link(sandbox_id)
    _add_netns(link.netns)
    try:
        with _netlink_errors(f"configuring namespace {link.netns}"):
            _in_netns(link.netns_path, _disable_ipv6)
        _add_pair(link, peer)
    except BaseException:
        destroy(naming, sandbox_id)
        raise
    return link


def attach(naming: Naming, sandbox_id: str, addresses: SlotAddresses, netns_path: str,
           ifname: str) -> SandboxLink:
    """Like `create`, into a namespace someone else made (a pod's, given by its container
    runtime): the sandbox's end is `ifname` there. Both link ends stay down."""
    if not netns_path.startswith("/") or not Path(netns_path).exists():
        raise NetError(f"no network namespace at {netns_path!r}")
    if _same_file(netns_path, "/proc/self/ns/net"):
        # the host's own namespace: its IPv6 would be switched off and a link named like
        # the pod's end added beside the host's interfaces
        raise NetError(f"{netns_path} is the gateway's own network namespace, not a pod's")
    link = SandboxLink(sandbox_id, netns_path, naming.host_link(sandbox_id), addresses, ifname)
    try:
        with _netlink_errors(f"configuring namespace {netns_path}"):
            _in_netns(netns_path, _disable_ipv6)
        _add_pair(link, naming.peer_link(sandbox_id))
    except BaseException:
        destroy(naming, sandbox_id)
        raise
    return link


def _same_file(a: str, b: str) -> bool:
    first, second = os.stat(a), os.stat(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _add_pair(link: SandboxLink, peer: str) -> None:
    """The veth pair, host end addressed and hardened, sandbox end moved into the link's
    namespace, renamed and addressed; loopback up there."""
    addresses = link.addresses
    prefix = addresses.link.prefixlen
    with _netlink_errors(f"creating link {link.host_link}"), \
            open(link.netns_path, "rb") as target, IPRoute() as ipr:
        ipr.link("add", ifname=link.host_link, kind="veth",
                 peer={"ifname": peer, "net_ns_fd": target.fileno()})
        Path(f"/proc/sys/net/ipv6/conf/{link.host_link}/disable_ipv6").write_text("1")
        # Never forward what arrives on this link, even if the nftables table is gone
        # (deleted by mistake): the forward-chain drop and this do not share a failure.
        Path(f"/proc/sys/net/ipv4/conf/{link.host_link}/forwarding").write_text("0")
        # Strict reverse-path filtering: a packet whose source routes via another link
        # is dropped (the nftables pin is the guarantee; this is a second, independent
        # one where conf/all/rp_filter does not loosen it).
        Path(f"/proc/sys/net/ipv4/conf/{link.host_link}/rp_filter").write_text("1")
        (index,) = ipr.link_lookup(ifname=link.host_link)
        ipr.addr("add", index=index, address=str(addresses.host_ip), prefixlen=prefix)

    def inside() -> None:
        with IPRoute() as ns:
            (inner,) = ns.link_lookup(ifname=peer)
            ns.link("set", index=inner, ifname=link.ifname)
            ns.addr("add", index=inner, address=str(addresses.sandbox_ip), prefixlen=prefix)
            (lo,) = ns.link_lookup(ifname="lo")
            ns.link("set", index=lo, state="up")

    with _netlink_errors(f"configuring {link.netns}"):
        _in_netns(link.netns_path, inside)


def bring_up(link: SandboxLink) -> None:
    """Set both ends up and give the sandbox its default route (to the host side)."""
    with _netlink_errors(f"bringing up {link.host_link}"), IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=link.host_link)
        ipr.link("set", index=index, state="up")

    def inside() -> None:
        with IPRoute() as ns:
            (inner,) = ns.link_lookup(ifname=link.ifname)
            ns.link("set", index=inner, state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=str(link.addresses.host_ip))

    with _netlink_errors(f"bringing up {link.ifname} in {link.netns}"):
        _in_netns(link.netns_path, inside)


def destroy(naming: Naming, sandbox_id: str) -> None:
    """Remove the host link (which takes its peer with it) and the namespace. Idempotent."""
    with _netlink_errors(f"removing link {naming.host_link(sandbox_id)}"), IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=naming.host_link(sandbox_id)):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)
    name = naming.netns(sandbox_id)
    if name in netns.listnetns():
        with _netlink_errors(f"removing namespace {name}"):
            netns.remove(name)


def name_from(naming: Naming, sandbox_id: str, pid: int) -> None:
    """Make the sandbox's namespace name (/run/netns/NAME) name the namespace process `pid`
    lives in. The name is never trusted by itself: it is a bind mount, which a restarted
    gateway in a fresh mount namespace (a restarted systemd unit's) may see as an empty file,
    or over another namespace. The process's namespace must hold the peer of the sandbox's
    host link; a name whose device and inode are those of its /proc/PID/ns/net stays, any
    other is replaced."""
    name = naming.netns(sandbox_id)
    path = str(NETNS_DIR / name)
    try:     # opened once: a pid reused meanwhile cannot swap the namespace checked
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetError(f"no namespace of process {pid}: {e.strerror}") from None
    held = f"/proc/self/fd/{fd}"
    try:
        with _netlink_errors(f"reading the namespace of process {pid}"):
            if not _holds_peer(held, naming.host_link(sandbox_id)):
                raise NetError(f"process {pid} is not in the sandbox's namespace")
            if Path(path).exists() and _same_file(path, held):
                return
        with _netlink_errors(f"naming the namespace of process {pid} {name}"):
            if name in netns.listnetns():
                netns.remove(name)   # unmounts whatever is there (nothing, for an empty file)
            netns.attach(name, pid)
            if not _same_file(path, held):   # the pid is another process's now
                raise NetError(f"{path} does not name the namespace of process {pid}")
    finally:
        os.close(fd)


def _holds_peer(netns_path: str, host_link: str) -> bool:
    """Whether the sandbox end (eth0) of `host_link` is in the namespace at `netns_path`."""
    with IPRoute() as ipr:
        host = ipr.link_lookup(ifname=host_link)

    def inside() -> bool:
        with IPRoute() as ns:
            inner = ns.link_lookup(ifname="eth0")
            return bool(inner) and ns.get_links(inner[0])[0].get_attr("IFLA_LINK") == host[0]

    return bool(host) and _in_netns(netns_path, inside)


def check(naming: Naming, sandbox_id: str, addresses: SlotAddresses) -> str | None:
    """None when the sandbox's namespace is there and its host link is up with the host's
    address of its slot; otherwise what is missing."""
    if naming.netns(sandbox_id) not in netns.listnetns():
        return "its network namespace is gone"
    with _netlink_errors("looking up the sandbox link"), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=naming.host_link(sandbox_id))
        if not found:
            return "its host link is gone"
        (link,) = ipr.get_links(found[0])
        if not link["flags"] & 1:   # IFF_UP
            return "its host link is down"
        own = {str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(index=found[0], family=2)}
    if str(addresses.host_ip) not in own:
        return "its host link lost the address of its slot"
    return None


def is_up(name: str) -> bool:
    """Whether host link `name` exists and is administratively up."""
    with _netlink_errors(f"reading link {name}"), IPRoute() as ipr:
        indices = ipr.link_lookup(ifname=name)
        return bool(indices) and all(msg["flags"] & IFF_UP for msg in ipr.get_links(*indices))


def existing_ids(naming: Naming) -> set[str]:
    """Sandbox ids that have a namespace or a host link of this installation."""
    ids = {i for n in netns.listnetns() if (i := naming.id_from_netns(n))}
    with _netlink_errors("listing links"), IPRoute() as ipr:
        for msg in ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            if name and (i := naming.id_from_link(name)):
                ids.add(i)
    return ids


def host_addresses() -> list[str]:
    """IPv4 addresses assigned in the host's namespace (the gateway refuses to dial them)."""
    with _netlink_errors("listing addresses"), IPRoute() as ipr:
        return [str(msg.get_attr("IFA_ADDRESS")) for msg in ipr.get_addr(family=2)]


def bridge_for_vm(netns_name: str, tap: str = "tap0") -> None:
    """Inside a sandbox namespace, join eth0 and a new tap device with a bridge, so a VM on
    the tap takes the sandbox address (eth0 gives it up)."""
    created = subprocess.run(["nsenter", f"--net={NETNS_DIR / netns_name}", "ip", "tuntap",
                              "add", "dev", tap, "mode", "tap"], capture_output=True, text=True,
                             check=False)
    if created.returncode != 0:
        raise NetError(f"creating {tap} in {netns_name}: {created.stderr.strip()}")
    with _netlink_errors(f"bridging {tap} in {netns_name}"), IPRoute(netns=netns_name) as ns:
        (eth0,) = ns.link_lookup(ifname="eth0")
        ns.flush_addr(index=eth0)
        ns.link("add", ifname="br0", kind="bridge")
        (bridge,) = ns.link_lookup(ifname="br0")
        (tap_index,) = ns.link_lookup(ifname=tap)
        for member in (eth0, tap_index):
            ns.link("set", index=member, master=bridge)
        for link in (bridge, tap_index, eth0):
            ns.link("set", index=link, state="up")
