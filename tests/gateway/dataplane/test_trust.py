"""Upstream trust is the host's: the distribution's bundle and directory by default,
SSL_CERT_FILE / SSL_CERT_DIR when the environment names them (as OpenSSL's default paths),
--upstream-ca added; and the proxy is configured with exactly that, not certifi."""

from __future__ import annotations

import asyncio
from pathlib import Path

import certifi
import pytest

from gateway.dataplane.proxy import build_master
from gateway.dataplane.trust import TrustError, host_store, upstream_trust, write_merged
from gateway.settings import Settings
from tests.doubles import data_plane

DEBIAN_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def test_without_environment_the_distribution_store_is_used() -> None:
    store = host_store({})
    assert store.file is not None and store.file.resolve() == DEBIAN_BUNDLE
    assert store.file_source == "distribution" and store.directory_source == "distribution"
    assert store.directory is not None and Path(store.directory).resolve() == \
        Path("/etc/ssl/certs")
    assert store.file.resolve() != Path(certifi.where()).resolve()


def test_the_environment_names_the_store(tmp_path: Path) -> None:
    bundle = tmp_path / "corp.pem"
    bundle.write_text("")
    store = host_store({"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": f"{tmp_path}:/x"})
    assert (store.file, store.file_source) == (bundle, "SSL_CERT_FILE")
    assert (store.directory, store.directory_source) == (f"{tmp_path}:/x", "SSL_CERT_DIR")
    # as OpenSSL: naming a file keeps the distribution's directory
    assert host_store({"SSL_CERT_FILE": str(bundle)}).directory is not None


def test_a_missing_named_bundle_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match=r"SSL_CERT_FILE names .*missing.pem, which is not"):
        host_store({"SSL_CERT_FILE": str(tmp_path / "missing.pem")})


def test_upstream_ca_is_added_to_the_host_bundle(tmp_path: Path) -> None:
    extra = tmp_path / "extra.pem"
    extra.write_text("-----BEGIN CERTIFICATE-----\nextra\n-----END CERTIFICATE-----\n")
    trust = upstream_trust(tmp_path, extra, {})
    write_merged(trust)
    assert trust.ca_file == tmp_path / "upstream-trust.pem"
    merged = trust.ca_file.read_text()
    assert merged.startswith(DEBIAN_BUNDLE.read_text().rstrip("\n")) and merged.endswith(
        extra.read_text())
    assert "(--upstream-ca, added)" in trust.describe()


def test_the_proxy_verifies_upstreams_against_the_host_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    plane = data_plane(tmp_path, "version: 1\nname: t\nrules: []\n")

    async def options() -> tuple[str, str]:
        proxy = build_master(Settings(home=tmp_path), plane.state, tcp_port=1,
                             on_ready=lambda: None)
        return (proxy.options.ssl_verify_upstream_trusted_ca,
                proxy.options.ssl_verify_upstream_trusted_confdir)

    ca_file, ca_dir = asyncio.run(options())
    assert Path(ca_file).resolve() == DEBIAN_BUNDLE
    assert Path(ca_dir).resolve() == Path("/etc/ssl/certs")
