"""`sandgate serve`, the composition root of a gateway host's main process.

The main process serves DNS (gateway.dataplane.dns), the control API on the root-only socket
and on TCP, the audit writer, and the state all processes share (authority and hub); it
supervises the proxy workers (gateway.processes.worker), which carry every TCP connection.
Start-up order: rules installed, audit writer, DNS, sandboxes left by an earlier run
adopted (registered and pinned again) or destroyed, hub, workers, API. Shut-down in reverse,
workers last before the hub so their final audit rows are read; sandboxes keep running (and
the table that refuses their egress stays) unless `destroy_on_stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import uvicorn
from sqlalchemy.engine import Engine

from gateway.approvals.book import ApprovalBook
from gateway.approvals.policy import policy_writer
from gateway.approvals.webhook import Webhook
from gateway.audit import exporters
from gateway.audit.heads import HeadsFile, HeadSigner
from gateway.audit.query import spent_since
from gateway.audit.writer import AuditWriter
from gateway.control.api import ControlPlane, create_app
from gateway.control.policy_store import PolicyStore
from gateway.control.policy_sync import PolicySync
from gateway.control.sandboxes.commands import Commands
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.pods import Pods
from gateway.control.sandboxes.records import Records
from gateway.control.secrets import Secrets
from gateway.dataplane.ca import ensure_ca, write_sandbox_bundle
from gateway.dataplane.dns import DnsServer
from gateway.dataplane.dns_throttle import DnsThrottle
from gateway.dataplane.registry import Registry
from gateway.dataplane.state import GatewayState
from gateway.dataplane.trust import TrustError, host_store, upstream_trust, write_merged
from gateway.dataplane.upstream import UpstreamResolver
from gateway.db import make_engine
from gateway.errors import NotReady
from gateway.processes import background
from gateway.processes.authority import Authority, LocalCoordinator, audit_row
from gateway.processes.hub import Hub
from gateway.processes.supervisor import WorkerPool
from gateway.providers.broker import Broker, threadsafe_resolve
from gateway.providers.transport import connector, tls_context
from gateway.readiness import Readiness
from gateway.settings import Settings
from gateway.timing import GIL_SWITCH_INTERVAL
from policies.decision import Reason
from sandbox_net import firewall, links
from sandbox_net.images.store import ImageStore
from sandbox_net.runtime.base import Runtime
from sandbox_net.runtime.gvisor import GVisorRuntime
from sandbox_net.runtime.microvm import MicroVMRuntime
from sandbox_net.wiring import HostNetwork
from vault.keyring import open_vault

logger = logging.getLogger(__name__)


def preflight(settings: Settings) -> None:
    if os.geteuid() != 0:
        raise NotReady("sandgate must run as root (it creates namespaces and nftables rules)",
                       "run it with sudo")
    GVisorRuntime(settings.runsc_dir).preflight()
    if settings.upstream_ca is not None and not settings.upstream_ca.is_file():
        raise NotReady(f"upstream CA file {settings.upstream_ca} does not exist")
    try:
        host_store()
    except TrustError as e:
        raise NotReady(str(e), "point it at a CA bundle, or unset it") from None


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


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are handled by serve(), which shuts both servers down in order


async def serve(settings: Settings) -> None:
    preflight(settings)
    # The event loop answers the proxy workers' questions (connection counts, rate buckets);
    # with the default 5 ms interval an answer could wait that long behind the audit writer.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.home.chmod(0o700)
    settings.create_gateway_id()
    with single_instance(settings.lock_file):
        await _serve_locked(settings)


def _runtimes(settings: Settings) -> dict[str, Runtime]:
    return {
        "gvisor": GVisorRuntime(settings.runsc_dir, platform=settings.runsc_platform),
        "microvm": MicroVMRuntime(settings.cache_dir / "microvm", accel=settings.microvm_accel),
    }


def _approvals(settings: Settings, engine: Engine, writer: AuditWriter, policies: PolicyStore,
               registry: Registry) -> ApprovalBook:
    webhook = None
    if settings.approval_webhook_url and settings.approval_webhook_secret:
        public = settings.approval_public_url or \
            f"http://{settings.api_host}:{settings.api_port}"
        webhook = Webhook(settings.approval_webhook_url, settings.approval_webhook_secret,
                          public)
    return ApprovalBook(engine, lambda row: writer.record(**audit_row(row)),
                        gateway_id=settings.gateway_id, timeout=settings.approval_timeout,
                        webhook=webhook, write_policy=policy_writer(policies, registry))


async def _serve_locked(settings: Settings) -> None:
    engine = make_engine(settings.db_url)
    gateway_id = settings.gateway_id
    network = HostNetwork(engine, settings.naming, settings.firewall, gateway_id=gateway_id,
                          host_id=settings.host_id)
    network.install_rules()
    writer = AuditWriter(engine, gateway_id=gateway_id, spool=settings.spool_file)
    published = HeadsFile(settings.heads_file).last(gateway_id)
    writer.start((published.seq, published.hash) if published else None)
    closers = exporters.attach(writer, engine, heads_file=settings.heads_file,
                               signing_key=settings.audit_signing_key_file,
                               otlp_endpoint=settings.otlp_endpoint)
    signer = HeadSigner.from_file(settings.audit_signing_key_file) \
        if settings.audit_signing_key_file else None
    registry = Registry()
    # pyroute2's synchronous API runs its own event loop: call it from a worker thread.
    own = [a for a in await asyncio.to_thread(links.host_addresses) if not a.startswith("127.")]
    resolver = UpstreamResolver(settings.upstream_resolver,
                                own_addresses=[ipaddress.IPv4Address(a) for a in own])
    authority = Authority(registry)
    authority.ledger.seed = lambda sandbox_id, rule, start: spent_since(
        engine, sandbox_id, rule, datetime.fromtimestamp(start, UTC))
    coordinator = LocalCoordinator(authority, writer)
    state = GatewayState(registry, resolver, coordinator)
    state.vault = open_vault(engine, settings.key_source, create=True)
    state.quarantine_on_exfil = settings.quarantine_on_exfil
    readiness = Readiness(settings.workers)
    ensure_ca(settings)
    trust = upstream_trust(settings.ca_dir, settings.upstream_ca)
    write_merged(trust)
    logger.info("upstream TLS is verified against %s", trust.describe())
    # provider secrets: minted here, once for every worker (gateway.providers)
    connect = connector(threadsafe_resolve(resolver, asyncio.get_running_loop()),
                        tls_context(trust))
    broker = Broker(state.vault, connect, record=lambda row: writer.record(**audit_row(row)))
    coordinator.broker = broker
    hub = Hub(authority, writer, registry, settings.hub_socket, readiness, broker)
    throttle = DnsThrottle(registry, writer)
    coordinator.lost = throttle.lost
    dns = DnsServer(state, settings.dns_port, settings.synthetic_ttl, throttle)
    await dns.start()

    policies = PolicyStore(settings.policy_dir)
    sync = PolicySync(engine, settings.policy_dir, gateway_id,
                      settings.home / "policy-sync.revision")
    await asyncio.to_thread(sync.pull)   # what other gateways changed while this one was down
    policies.publish = sync.publish
    secrets = Secrets(state.vault, settings.key_source)
    secrets.changed = hub.vault_changed
    records = Records(engine, gateway_id)
    authority.keep_quarantine = partial(_keep_quarantine, asyncio.get_running_loop(), records)
    sandboxes = Sandboxes(settings, records, registry, network,
                          _runtimes(settings), policies, ImageStore(settings.images_dir),
                          ca_bundle=write_sandbox_bundle(settings),
                          secret_exists=secrets.exists,
                          open_connections=authority.open_connections,
                          flush_audit=writer.flush, readiness=readiness, audit=writer.record)
    await asyncio.to_thread(sandboxes.reconcile)
    authority.approvals = approvals = _approvals(settings, engine, writer, policies, registry)
    await asyncio.to_thread(approvals.reconcile)
    workers = WorkerPool(settings)
    await hub.start()
    workers.start()
    pods = Pods(sandboxes, secret_namespaces=secrets.namespaces)
    plane = ControlPlane(engine, writer, policies, secrets, sandboxes, Commands(sandboxes),
                         approvals=approvals, budgets=authority.budget_usage, pods=pods)
    socket_path = settings.control_socket
    socket_path.unlink(missing_ok=True)
    apis = [
        _ApiServer(uvicorn.Config(create_app(plane, readiness, local=True),
                                  uds=str(socket_path), log_level="warning", lifespan="off")),
        _ApiServer(uvicorn.Config(create_app(plane, readiness, local=False),
                                  host=settings.api_host, port=settings.api_port,
                                  log_level="warning", lifespan="off")),
    ]

    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        readiness.stopping()
        for api in apis:
            api.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.ensure_future(c) for c in (
        background.reload_policies(policies), background.sync_policies(sync),
        background.retention(engine, settings.audit_retain_days, signer),
        background.reap(sandboxes),
        background.watch_firewall(settings.firewall_check_interval, network.restore_rules),
        workers.supervise(), background.keep_warm(sandboxes))]
    try:
        serving = [asyncio.ensure_future(stopping.wait()),
                   *(asyncio.ensure_future(api.serve()) for api in apis)]
        done, _ = await asyncio.wait(serving, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*serving, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        state.vault.flush_usage()
        await asyncio.to_thread(pods.shutdown)
        kept = await asyncio.to_thread(sandboxes.shutdown)
        await workers.stop()
        await hub.close()
        broker.close()
        await dns.close()
        writer.close()
        for close in closers:
            close()
        if kept:   # their egress stays refused (redirected to ports nobody listens on)
            logger.info("%d sandbox(es) keep running until the next start adopts them: %s",
                        len(kept), ", ".join(kept))
        else:
            firewall.remove(settings.firewall)
        socket_path.unlink(missing_ok=True)


def _keep_quarantine(loop: asyncio.AbstractEventLoop, records: Records, sandbox_id: str) -> None:
    """The quarantine written to the sandbox's record from a thread: the main loop (every
    worker's questions, DNS) never waits on the database, which may be busy for seconds.
    The registry already refuses the sandbox everywhere; the record is what a restart reads."""

    def written(future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.error("could not write the quarantine of sandbox %s to its record: %s",
                         sandbox_id, future.exception())

    loop.run_in_executor(None, records.quarantine, sandbox_id,
                         Reason.SECRET_EXFIL_ATTEMPT).add_done_callback(written)
