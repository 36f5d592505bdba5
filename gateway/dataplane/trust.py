"""Whom the gateway trusts for upstream TLS: the host's trust store, found the way OpenSSL's
default paths find it (and curl and Python with them), not certifi's bundle (mitmproxy's
default), so a host whose store holds a private or TLS-inspection CA works as it does for
everything else on it.

    file: $SSL_CERT_FILE, else the distribution's bundle
    dir:  $SSL_CERT_DIR (a ':'-separated list), else the distribution's hashed directory

As with OpenSSL, both are used: naming a file does not drop the directory. `--upstream-ca`
(SANDGATE_UPSTREAM_CA) adds its certificates to that store (docs/SERVICE.md).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import certifi

# Where distributions keep their bundle and hashed directory (the list Go's crypto/x509 and
# OpenSSL builds look in): Debian/Ubuntu/Arch, Fedora/RHEL, openSUSE, RHEL 7+, Alpine.
BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
           "/etc/ssl/ca-bundle.pem", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
           "/etc/ssl/cert.pem")
DIRECTORIES = ("/etc/ssl/certs", "/etc/pki/tls/certs")
MERGED = "upstream-trust.pem"   # in the CA directory: the host's bundle plus --upstream-ca


class TrustError(ValueError):
    """The environment names a trust store that is not there."""


@dataclass(frozen=True, slots=True)
class HostStore:
    file: Path | None
    file_source: str           # SSL_CERT_FILE, distribution, or certifi (no store on the host)
    directory: str | None
    directory_source: str      # SSL_CERT_DIR or distribution


@dataclass(frozen=True, slots=True)
class Trust:
    host: HostStore
    extra: Path | None = None     # --upstream-ca
    merged: Path | None = None    # the host's bundle plus `extra`, when there is an extra

    @property
    def ca_file(self) -> Path | None:
        """The one file mitmproxy loads."""
        return self.merged if self.extra is not None else self.host.file

    @property
    def ca_dir(self) -> str | None:
        return self.host.directory

    def describe(self) -> str:
        parts = [f"{self.host.file} ({self.host.file_source})"] if self.host.file else []
        if self.host.directory:
            parts.append(f"{self.host.directory} ({self.host.directory_source})")
        if self.extra:
            parts.append(f"{self.extra} (--upstream-ca, added)")
        return " + ".join(parts)


def _first_file(*candidates: str | None) -> Path | None:
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def _first_dir(*candidates: str | None) -> str | None:
    return next((c for c in candidates if c and Path(c).is_dir()), None)


def host_store(environ: Mapping[str, str] = os.environ) -> HostStore:
    """The host's trust store, found as OpenSSL's default paths find it."""
    defaults = ssl.get_default_verify_paths()
    named = environ.get("SSL_CERT_FILE")
    if named and not Path(named).is_file():
        raise TrustError(f"SSL_CERT_FILE names {named}, which is not a file")
    file = Path(named) if named else _first_file(defaults.openssl_cafile, defaults.cafile,
                                                 *BUNDLES)
    directory = environ.get("SSL_CERT_DIR") or _first_dir(defaults.openssl_capath,
                                                          defaults.capath, *DIRECTORIES)
    directory_source = "SSL_CERT_DIR" if environ.get("SSL_CERT_DIR") else "distribution"
    if file is None and directory is None:
        # No trust store at all on this host: certifi's bundle rather than trusting nothing.
        return HostStore(Path(certifi.where()), "certifi: the host has no trust store", None,
                         directory_source)
    return HostStore(file, "SSL_CERT_FILE" if named else "distribution", directory,
                     directory_source)


def upstream_trust(ca_dir: Path, upstream_ca: Path | None,
                   environ: Mapping[str, str] = os.environ) -> Trust:
    """The store the proxy workers load; with `upstream_ca`, the merged bundle that
    `write_merged` leaves in `ca_dir`."""
    return Trust(host_store(environ), upstream_ca, ca_dir / MERGED if upstream_ca else None)


def write_merged(trust: Trust) -> None:
    """The host's bundle and the --upstream-ca certificates in one file (mitmproxy loads one
    file and one directory). Written by the main process before the workers start."""
    if trust.extra is None or trust.merged is None:
        return
    host = trust.host.file.read_text() if trust.host.file is not None else ""
    trust.merged.write_text(host.rstrip("\n") + "\n" + trust.extra.read_text())
    trust.merged.chmod(0o644)
