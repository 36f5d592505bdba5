"""`sandgate serve`: the gateway (mitmproxy) and the control API in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
from sqlalchemy.engine import Engine

from gateway.audit.chain import HeadSigner, apply_retention, record_signed_head
from gateway.audit.otlp import OtlpExporter
from gateway.audit.writer import AuditWriter
from gateway.control.api import create_app
from gateway.control.policy_store import PolicyStore, watch
from gateway.control.policy_sync import PolicySync, keep_synced
from gateway.control.service import SYSTEM_BUNDLE, SandboxService
from gateway.dataplane.dns import DnsServer
from gateway.dataplane.proxy import CA_CERT, CA_KEY, ensure_ca
from gateway.dataplane.registry import Registry
from gateway.dataplane.state import GatewayState
from gateway.dataplane.upstream import UpstreamResolver
from gateway.db import make_engine
from gateway.errors import NotReady
from gateway.processes.authority import Authority, LocalCoordinator
from gateway.processes.hub import Hub
from gateway.processes.periodic import every
from gateway.processes.supervisor import WorkerPool
from gateway.settings import Settings
from sandbox_net import firewall, links
from sandbox_net.errors import FirewallError
from sandbox_net.runtime.base import Runtime
from sandbox_net.runtime.gvisor import GVisorRuntime
from sandbox_net.runtime.microvm import MicroVMRuntime
from vault.keyring import open_vault

logger = logging.getLogger(__name__)


def preflight(settings: Settings) -> None:
    if os.geteuid() != 0:
        raise NotReady("sandgate must run as root (it creates namespaces and nftables rules)",
                       "run it with sudo")
    GVisorRuntime(settings.runsc_dir).preflight()
    if settings.upstream_ca is not None and not settings.upstream_ca.is_file():
        raise NotReady(f"upstream CA file {settings.upstream_ca} does not exist")


@contextlib.contextmanager
def single_instance(lock_file: Path) -> Iterator[None]:
    """One gateway per data directory: its start-up clean-up would destroy another's sandboxes."""
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise NotReady(f"a gateway is already running for {lock_file.parent} "
                           f"(pid {handle.read().strip() or '?'})",
                           "stop it first, or set SANDGATE_HOME to another directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def write_ca_bundle(settings: Settings) -> Path:
    """The trust bundle a sandbox sees: the system's roots plus the gateway CA."""
    key = settings.ca_dir / CA_KEY
    key.chmod(0o600)
    cert = (settings.ca_dir / CA_CERT).read_text()
    system = SYSTEM_BUNDLE.read_text() if SYSTEM_BUNDLE.exists() else ""
    bundle = settings.ca_dir / "sandbox-bundle.pem"
    bundle.write_text(system.rstrip("\n") + "\n" + cert)
    bundle.chmod(0o644)
    return bundle


HEAD_SIGNING_INTERVAL = 10.0  # seconds between signed audit chain heads


def _audit_exporters(settings: Settings, engine: Engine,
                     writer: AuditWriter) -> list[Callable[[], None]]:
    """Signed chain heads and OTLP export, fed after each committed batch; returns what to
    call at shut-down."""
    closers: list[Callable[[], None]] = []
    if settings.audit_signing_key_file is not None:
        signer = HeadSigner.from_file(settings.audit_signing_key_file)
        last = [0.0]

        def sign(_rows: list[dict[str, object]]) -> None:
            if time.monotonic() - last[0] >= HEAD_SIGNING_INTERVAL:
                last[0] = time.monotonic()
                record_signed_head(engine, signer, writer.gateway_id, *writer.head)

        writer.after_commit.append(sign)
        closers.append(lambda: record_signed_head(engine, signer, writer.gateway_id,
                                                  *writer.head))
    if settings.otlp_endpoint:
        exporter = OtlpExporter(settings.otlp_endpoint, writer.gateway_id)
        exporter.start()
        writer.after_commit.append(exporter.submit)
        closers.append(exporter.close)
    return closers


REAP_INTERVAL = 0.25  # seconds: a sandbox outlives its deadline by at most this much (+ teardown)


async def _reap(service: SandboxService) -> None:
    await every(REAP_INTERVAL, service.reap, "removing expired sandboxes failed; will retry")


async def _keep_warm(service: SandboxService) -> None:
    while service.settings.warm_pool:
        await asyncio.sleep(REAP_INTERVAL)
        try:
            await asyncio.to_thread(service.keep_warm)
        except Exception:
            logger.exception("starting a warm sandbox failed; retrying in 5 s")
            await asyncio.sleep(5)


async def _watch_firewall(settings: Settings) -> None:
    """Reinstall the nftables table when it is changed or deleted (an operator's mistake).
    Meanwhile new sandboxes are refused (creation verifies the table) and existing links do
    not forward (per-link forwarding is off), so no sandbox gains direct egress."""
    interval = settings.firewall_check_interval
    while interval:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(firewall.verify, settings.firewall)
        except FirewallError as e:
            logger.error("egress rules changed or missing (%s); reinstalling them", e)
            try:
                await asyncio.to_thread(firewall.apply, settings.firewall)
            except FirewallError:
                logger.exception("could not reinstall the egress rules; will retry")


async def _retention(engine: Engine, days: int | None) -> None:
    while days is not None:
        try:
            deleted = await asyncio.to_thread(apply_retention, engine, days)
            if deleted:
                logger.info("audit retention: %d rows older than %d days deleted", deleted, days)
        except Exception:
            logger.exception("audit retention failed")
        await asyncio.sleep(3600)


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are handled by serve(), which shuts both servers down in order


GIL_SWITCH_INTERVAL = 0.0005  # seconds: workers wait on this loop while the audit thread runs


async def serve(settings: Settings) -> None:
    preflight(settings)
    # The event loop answers the proxy workers' questions (connection counts, rate buckets);
    # with the default 5 ms interval an answer could wait that long behind the audit writer.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.home.chmod(0o700)
    with single_instance(settings.lock_file):
        await _serve_locked(settings)


async def _serve_locked(settings: Settings) -> None:
    engine = make_engine(settings.db_url)
    firewall.apply(settings.firewall)
    writer = AuditWriter(engine, gateway_id=settings.gateway_id, spool=settings.spool_file)
    writer.start()
    exporters = _audit_exporters(settings, engine, writer)
    registry = Registry()
    # pyroute2's synchronous API runs its own event loop: call it from a worker thread.
    own = [a for a in await asyncio.to_thread(links.host_addresses) if not a.startswith("127.")]
    resolver = UpstreamResolver(settings.upstream_resolver,
                                own_addresses=[ipaddress.IPv4Address(a) for a in own])
    authority = Authority(registry)
    state = GatewayState(registry, resolver, LocalCoordinator(authority, writer))
    state.vault = open_vault(engine, settings.key_source, create=True)
    state.quarantine_on_exfil = settings.quarantine_on_exfil
    # TCP is proxied by worker processes; this one serves DNS, the API and the audit writer
    # (in a process of its own, the writer never holds a proxy's GIL).
    hub = Hub(authority, writer, registry, settings.hub_socket)
    ensure_ca(settings)
    dns = DnsServer(state, settings.dns_port, settings.synthetic_ttl)
    await dns.start()

    def ready() -> bool:
        return hub.ready_workers() == settings.workers

    runtimes: dict[str, Runtime] = {
        "gvisor": GVisorRuntime(settings.runsc_dir, platform=settings.runsc_platform),
        "microvm": MicroVMRuntime(settings.home / "microvm"),
    }
    policies = PolicyStore(settings.policy_dir)
    sync = PolicySync(engine, settings.policy_dir, settings.gateway_id,
                      settings.home / "policy-sync.revision")
    await asyncio.to_thread(sync.pull)   # what other gateways changed while this one was down
    policies.publish = sync.publish
    service = SandboxService(settings, engine, registry, runtimes,
                             policies, writer, write_ca_bundle(settings), vault=state.vault,
                             open_connections=authority.open_connections)
    await asyncio.to_thread(service.reconcile)
    workers = WorkerPool(settings)
    service.after_vault_change = hub.vault_changed
    await hub.start()
    workers.start()
    socket_path = settings.control_socket
    socket_path.unlink(missing_ok=True)
    apis = [
        _ApiServer(uvicorn.Config(create_app(service, ready, local=True),
                                  uds=str(socket_path), log_level="warning", lifespan="off")),
        _ApiServer(uvicorn.Config(create_app(service, ready, local=False),
                                  host=settings.api_host, port=settings.api_port,
                                  log_level="warning", lifespan="off")),
    ]

    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        for api in apis:
            api.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    background = [asyncio.ensure_future(c) for c in (
        watch(policies), keep_synced(sync), _retention(engine, settings.audit_retain_days),
        _reap(service), _watch_firewall(settings), workers.supervise(), _keep_warm(service))]
    try:
        tasks = [asyncio.ensure_future(stopping.wait()),
                 *(asyncio.ensure_future(api.serve()) for api in apis)]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        for task in background:
            task.cancel()
        state.vault.flush_usage()
        await asyncio.to_thread(service.shutdown)
        await workers.stop()
        await hub.close()
        await dns.close()
        writer.close()
        for close in exporters:
            close()
        firewall.remove(settings.firewall)
        socket_path.unlink(missing_ok=True)
