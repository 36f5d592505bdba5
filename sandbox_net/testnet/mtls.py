"""An upstream that requires a client certificate (mutual TLS), and the client PKI for it: a
root the upstream trusts, an intermediate, and a client certificate under it (the file holds
the client certificate and the intermediate, so presenting the chain is what makes it
verify). Each request, and each handshake refused, is logged."""

from __future__ import annotations

import datetime
import json
import socketserver
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox_net.testnet.certs import _name, _pem_key


@dataclass(frozen=True)
class ClientPki:
    ca: Path          # the root the upstream trusts
    chain: Path       # the client certificate, then the intermediate
    key: Path
    subject: str      # the client certificate's common name


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                              critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_client_pki(directory: Path, subject: str = "sandgate-agent") -> ClientPki:
    directory.mkdir(parents=True, exist_ok=True)
    root_key, middle_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name = _name("sandgate test client root")
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1))
            .not_valid_after(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(root_key, hashes.SHA256()))
    middle = _certificate("sandgate test client intermediate", middle_key, root_name, root_key,
                          ca=True)
    leaf = _certificate(subject, key, middle.subject, middle_key, ca=False)
    pem = serialization.Encoding.PEM
    pki = ClientPki(directory / "client-root.pem", directory / "client-chain.pem",
                    directory / "client.key", subject)
    pki.ca.write_bytes(root.public_bytes(pem))
    pki.chain.write_bytes(leaf.public_bytes(pem) + middle.public_bytes(pem))
    pki.key.write_bytes(_pem_key(key))
    pki.key.chmod(0o600)
    return pki


def serve(write: Any, address: str, port: int, cert: str, key: str, client_ca: str) -> None:
    """HTTPS that answers only a client whose certificate chains to `client_ca`."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            try:
                self.request.do_handshake()   # here, so that a refusal is logged
            except (ssl.SSLError, OSError) as e:
                write("mtls-refused", error=type(e).__name__, reason=str(e)[:200])
                raise
            super().setup()

        def do_GET(self) -> None:
            peer = self.request.getpeercert()
            subject = dict(item[0] for item in peer["subject"]) if peer else {}
            write("mtls", path=self.path, client=subject.get("commonName"),
                  host=self.headers.get("host"))
            body = json.dumps({"client": subject.get("commonName"), "path": self.path}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def server_bind(self) -> None:
            # HTTPServer.server_bind calls getfqdn(), a DNS lookup: not in this namespace
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    server = Server((address, port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
