"""mTLS towards upstreams: the client certificate of an `as: mtls` injection is presented in
the TLS handshake of the upstream connections its rule allowed, for that sandbox only. The
certificate and its key stay in the gateway; the sandbox holds a placeholder, as for any
secret.

Which certificate a connection presents is fixed by its first allowed request
(addons.credentials, `Conn.client_cert`): every upstream connection opened for that client
connection presents it, and a request whose rule wants another is refused there (421), so a
certificate never authenticates a request another rule (or sandbox) allowed.

mitmproxy's TlsConfig builds the upstream TLS connection (SNI, hostname check, ALPN,
ciphers); this addon runs after it and moves the connection to a context holding the
identity: its certificate chain, its key, and the same trust store for the server's
certificate. mitmproxy's own contexts are cached and shared, so they are never changed.
"""

from __future__ import annotations

import logging

import certifi
from mitmproxy import ctx, tls
from OpenSSL import SSL

from gateway.dataplane.state import GatewayState
from gateway.dataplane.values import ClientIdentity, CredentialError

logger = logging.getLogger(__name__)


class ClientCert:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._contexts: dict[tuple[str, str, str | None, str | None], SSL.Context] = {}

    def tls_start_server(self, tls_start: tls.TlsData) -> None:
        conn = self.state.conns.get(tls_start.context.client.id)
        if conn is None or conn.client_cert is None or tls_start.ssl_conn is None:
            return
        try:
            identity = self.state.values.client_identity(conn.client_cert)
        except CredentialError as e:
            # checked when the request was allowed; gone since (deleted): present nothing
            logger.error("sandbox %s: %s", conn.sandbox.id, e)
            return
        tls_start.ssl_conn.set_context(self._context(identity))
        # TLS 1.3 servers may ask for the certificate after the handshake
        SSL._lib.SSL_set_post_handshake_auth(tls_start.ssl_conn._ssl, 1)  # type: ignore[attr-defined]

    def _context(self, identity: ClientIdentity) -> SSL.Context:
        ca_dir = ctx.options.ssl_verify_upstream_trusted_confdir
        # as mitmproxy: certifi's bundle when no store is named
        ca_file = ctx.options.ssl_verify_upstream_trusted_ca or (None if ca_dir else
                                                                 certifi.where())
        key = (identity.name, identity.generation, ca_file, ca_dir)
        context = self._contexts.get(key)
        if context is not None:
            return context
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.use_certificate(identity.chain[0])
        for certificate in identity.chain[1:]:
            context.add_extra_chain_cert(certificate)
        context.use_privatekey(identity.key)
        context.check_privatekey()
        # The connection verifies the server against its context's store: the same as
        # mitmproxy's (gateway.dataplane.trust), the hostname check stays the connection's.
        context.load_verify_locations(ca_file, ca_dir)
        context.set_verify(SSL.VERIFY_PEER)
        self._contexts = {k: v for k, v in self._contexts.items()
                          if k[0] != identity.name}
        self._contexts[key] = context
        return context
