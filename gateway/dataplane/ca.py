"""The gateway's CA: created once by the main process (before the workers load it), and the
trust bundle sandboxes see (the system's roots plus this CA)."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import certs, options

from gateway.settings import Settings

CA_CERT = "mitmproxy-ca-cert.pem"
CA_KEY = "mitmproxy-ca.pem"
CA_BASENAME = "mitmproxy"   # mitmproxy's own name for its CA files (tlsconfig.CONF_BASENAME)
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def ensure_ca(settings: Settings) -> None:
    """Create the gateway's CA (mitmproxy's files in the data dir) if it does not exist yet:
    once, in the main process, before the workers load it."""
    certs.CertStore.from_store(path=settings.ca_dir, basename=CA_BASENAME,
                               key_size=options.Options().key_size)


def write_sandbox_bundle(settings: Settings) -> Path:
    """The trust bundle a sandbox sees: the system's roots plus the gateway CA."""
    key = settings.ca_dir / CA_KEY
    key.chmod(0o600)
    cert = (settings.ca_dir / CA_CERT).read_text()
    system = SYSTEM_BUNDLE.read_text() if SYSTEM_BUNDLE.exists() else ""
    bundle = settings.ca_dir / "sandbox-bundle.pem"
    bundle.write_text(system.rstrip("\n") + "\n" + cert)
    bundle.chmod(0o644)
    return bundle
