"""Session fixtures: one test topology and one gateway for the integration suites. Every
namespace, link and nftables table they create carries a per-run prefix and is removed at
the end, also when tests fail."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from sandbox_net import cgroups
from sandbox_net.errors import ImageError
from sandbox_net.images.store import ImageStore
from tests import isolation, leases
from tests.harness import AWS_KEY_ID, AWS_SECRET, REAL_SECRETS, Gateway
from tests.topology import TRAPS, Topology

# Suites that need root, real namespaces, nftables, runsc or other processes; the rest are the
# root-free unit tests, which `make test` runs first.
INTEGRATION = ("integration", "security", "deploy")


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() == 0:
        for prefix in leases.sweep_dead_runs(force_clean):
            print(f"removed leftovers of a dead test run: {prefix}")
        isolation.enter_private_host(leases.lease_prefix())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(Path(__file__).parent).parts
        if parts[0] in INTEGRATION:
            item.add_marker(pytest.mark.integration)


def new_prefix() -> str:
    """A per-run name prefix, leased to this process (see tests/leases.py)."""
    return leases.lease_prefix()


def leftovers(prefix: str) -> list[str]:
    """Everything named with `prefix` that still exists on the host, as 'kind name'."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n.split()[0]}" for n in netns.splitlines() if n.startswith(f"{prefix}-")]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split()[0].split('@')[0]}" for line in links.splitlines()
              if line.startswith(prefix)]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"table {t.split()[-1]}" for t in tables.splitlines()
              if t.endswith(f"sandgate_{prefix}")]
    found += [f"cgroup {name}" for name in sorted(cgroups.existing(prefix))]
    return found


def force_clean(prefix: str) -> None:
    commands = {"netns": ["ip", "netns", "del"], "link": ["ip", "link", "del"],
                "table": ["nft", "delete", "table", "inet"]}
    remove_test_images(prefix)
    for entry in leftovers(prefix):
        kind, name = entry.split()
        if kind == "cgroup":
            cgroups.destroy(name)
        else:
            subprocess.run([*commands[kind], name], check=False, capture_output=True)


def remove_test_images(prefix: str) -> None:
    """Images a test imported into the host's store are named sgtest-PREFIX-..."""
    store = ImageStore(Settings().images_dir)
    for image in store.list():
        if image.name.startswith(f"sgtest-{prefix}-"):
            with contextlib.suppress(ImageError):
                store.remove(image.name)


def kill_runsc(home: Path) -> list[int]:
    """SIGKILL every runsc process of the gateway whose data dir is `home`; return their pids."""
    marker = f"--root={home}/runsc".encode()
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
    return killed


@pytest.fixture(scope="session")
def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the integration suites need root (namespaces, nftables, runsc)")


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@pytest.fixture(scope="session")
def ip_forwarding(require_root: None) -> Iterator[None]:
    """Production hosts forward IP packets (and this one may not): test the worst case, where
    only sandgate's forward-chain drop stands between a sandbox and the network."""
    before = IP_FORWARD.read_text()
    IP_FORWARD.write_text("1")
    try:
        yield
    finally:
        IP_FORWARD.write_text(before)


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory, ip_forwarding: None) -> Iterator[Topology]:
    prefix = new_prefix()
    topo = Topology(prefix, tmp_path_factory.mktemp("inet"),
                    traps=TRAPS,
                    sigv4_keys={AWS_KEY_ID: AWS_SECRET}, reveal=True, mcp=True,
                    tokens=True)
    try:
        topo.start()
        yield topo
    finally:
        topo.stop()
        force_clean(prefix)


@contextlib.contextmanager
def killed_after(home: Path, topology: Topology) -> Iterator[Gateway]:
    """A gateway of one test's own (not started): killed (SIGKILL) and swept afterwards
    however the test ends, as a crash would leave it."""
    gw = Gateway(new_prefix(), home, topology)
    try:
        yield gw
    finally:
        gw.stop(signal.SIGKILL)
        kill_runsc(gw.home)
        force_clean(gw.prefix)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, topology: Topology) -> Iterator[Gateway]:
    prefix = new_prefix()
    gw = Gateway(prefix, tmp_path_factory.mktemp("gateway"), topology)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
        remaining = leftovers(prefix)
        stray = kill_runsc(gw.home)
        force_clean(prefix)
        assert not remaining, f"gateway left {remaining} behind"
        assert not stray, f"gateway left runsc processes {stray} behind"
        assert_no_secret_in(gw.home)


def assert_no_secret_in(directory: Path) -> None:
    """No real secret value in any file the gateway wrote: database, WAL, logs, CA, state."""
    needles = [s.encode() for s in REAL_SECRETS]
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            leaked = [n for n in needles if n in data]
            assert not leaked, f"{path} holds a real secret value"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def postgres_url(require_root: None) -> Iterator[str]:
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each audit test runs against SQLite and against a real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:  # the next test gets an empty database
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
