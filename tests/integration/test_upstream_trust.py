"""Upstream trust is the host's: a sandbox reaches an upstream whose CA is only in the trust
store that the gateway's environment names (SSL_CERT_FILE, or a hashed SSL_CERT_DIR), with
no --upstream-ca; with neither, the distribution's bundle is used, which does not hold the
test CA, so the same call is refused (fail closed), never let through unverified."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import force_clean, kill_runsc, new_prefix
from tests.harness import Gateway
from tests.topology import Topology

pytestmark = pytest.mark.integration

CALL = ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
        "https://secure.upstream.test/hello"]


def hashed_directory(directory: Path, ca: Path) -> Path:
    """A CA directory as OpenSSL looks one up: <subject hash>.0."""
    directory.mkdir()
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(ca)],
                                  capture_output=True, text=True, check=True).stdout.strip()
    (directory / f"{subject_hash}.0").symlink_to(ca)
    return directory


def test_the_gateway_trusts_what_the_host_trusts(
        tmp_path: Path, topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    assert topology.ca is not None
    ca = topology.ca.ca_cert
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    gw = Gateway(new_prefix(), tmp_path / "gw", topology, trust_test_ca=False)
    policy = gw.policy("trust", [{"id": "secure", "hosts": ["secure.upstream.test"]}])
    stores = {"SSL_CERT_FILE": {"SSL_CERT_FILE": str(ca)},
              "SSL_CERT_DIR": {"SSL_CERT_DIR": str(hashed_directory(tmp_path / "certs", ca))},
              "distribution": {}}
    got = {}
    try:
        for store, env in stores.items():
            gw.extra_env = dict(env)
            gw.start()
            mark = gw.last_audit_id()
            result = gw.run(policy, *CALL)
            rows = [r for r in gw.audit_rows(mark) if r["protocol"] != "dns"]
            got[store] = (result.stdout, [(r["decision"], r["status"]) for r in rows])
            if store == "distribution":
                assert any("certificate" in (r["error"] or "") for r in rows), rows
            gw.stop()
    finally:
        gw.stop()
        kill_runsc(gw.home)
        force_clean(gw.prefix)
    assert got == {"SSL_CERT_FILE": ("200", [("allow", 200)]),
                   "SSL_CERT_DIR": ("200", [("allow", 200)]),
                   "distribution": ("502", [("error", None)])}, got
