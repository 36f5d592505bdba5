"""How the gateway reaches token endpoints: over HTTPS only, each name resolved by the
gateway's own resolver and the address vetted as for any upstream (no private, loopback,
link-local or metadata address unless the provider's `allow_addresses` names it), the
certificate checked against the host's trust store (gateway.dataplane.trust), no proxy from
the environment, no redirect, answers capped in size and time. The sandbox's policy has no
say: the sandbox never talks to a token endpoint.

The libraries that speak each flow (Authlib, google-auth) take a `requests` session; this
module hands them one whose adapter dials the vetted address with the name as SNI and Host,
and notes each exchange for the audit row.
"""

from __future__ import annotations

import contextvars
import ipaddress
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.util
from requests.adapters import HTTPAdapter

from gateway.dataplane.trust import Trust
from gateway.dataplane.upstream import ResolveError, Vetted

MAX_ANSWER = 1 << 20          # bytes: a token answer is a few hundred
TIMEOUT = (5.0, 10.0)         # seconds: connect, then each read

type Resolve = Callable[[str, Sequence[ipaddress.IPv4Network]], Vetted]

_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("sandgate_token_endpoint")


class EndpointError(requests.RequestException):
    """The token endpoint cannot be reached as the gateway reaches upstreams."""


@dataclass
class Exchange:
    """One request to a token endpoint, for the audit row (no header, no body)."""

    method: str
    host: str
    port: int
    path: str
    upstream: str | None = None
    status: int | None = None
    duration_ms: float | None = None
    error: str | None = None


def tls_context(trust: Trust) -> ssl.SSLContext:
    """The host's trust store (plus --upstream-ca), as the proxy workers verify upstreams."""
    context = ssl.create_default_context(
        cafile=str(trust.ca_file) if trust.ca_file else None, capath=trust.ca_dir)
    # OpenSSL's checks, as mitmproxy makes them for every other upstream: Python 3.13's
    # stricter default would refuse a private CA that upstream connections accept
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


class VettedAdapter(HTTPAdapter):
    def __init__(self, resolve: Resolve, tls: ssl.SSLContext,
                 permitted: Sequence[ipaddress.IPv4Network], exchanges: list[Exchange]) -> None:
        super().__init__(max_retries=0)
        self.resolve = resolve
        self.tls = tls
        self.permitted = permitted
        self.exchanges = exchanges

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Mapping[str, str] | None = None) -> requests.Response:
        url = urllib3.util.parse_url(request.url or "")
        host = (url.host or "").lower()
        exchange = Exchange(request.method or "GET", host, url.port or 443, url.path or "/")
        self.exchanges.append(exchange)
        if url.scheme != "https" or not host:
            exchange.error = "not an https:// URL"
            raise EndpointError(f"{request.url}: token endpoints are reached over https only")
        try:
            vetted = self.resolve(host, self.permitted)
        except ResolveError as e:
            exchange.error = str(e)
            raise EndpointError(str(e)) from None
        exchange.upstream = str(vetted.address)
        request.url = url._replace(host=str(vetted.address)).url
        request.headers["Host"] = host if url.port in (None, 443) else f"{host}:{url.port}"
        started = time.monotonic()
        token = _NAME.set(host)
        try:
            response = super().send(request, stream=True, timeout=TIMEOUT, verify=True)
            response._content = _capped(response)   # what requests itself fills in
        except requests.RequestException as e:
            exchange.error = type(e).__name__
            raise
        finally:
            _NAME.reset(token)
            exchange.duration_ms = round((time.monotonic() - started) * 1000, 1)
        exchange.status = response.status_code
        response.url = request.url.replace(str(vetted.address), host, 1)
        return response

    def build_connection_pool_key_attributes(
            self, request: requests.PreparedRequest, verify: Any,
            cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert)
        # the vetted address is dialed; the certificate must name the endpoint's host
        pool_kwargs.update(ssl_context=self.tls, server_hostname=_NAME.get(),
                           cert_reqs="CERT_REQUIRED")
        pool_kwargs.pop("ca_certs", None)
        pool_kwargs.pop("ca_cert_dir", None)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # the trust is the SSL context's (the host's store), never certifi's bundle
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = conn.ca_cert_dir = None


def _capped(response: requests.Response) -> bytes:
    data: bytes = response.raw.read(MAX_ANSWER + 1, decode_content=True)
    response.close()
    if len(data) > MAX_ANSWER:
        raise EndpointError(f"the token endpoint answered more than {MAX_ANSWER} bytes")
    return data


type Connector = Callable[[Sequence[ipaddress.IPv4Network], list[Exchange]],
                          Callable[[requests.Session], None]]


def connector(resolve: Resolve, tls: ssl.SSLContext) -> Connector:
    """For a provider's permitted networks and an exchange list, what prepares each session
    its flow opens (the broker's `connect`)."""
    def connect(permitted: Sequence[ipaddress.IPv4Network],
                exchanges: list[Exchange]) -> Callable[[requests.Session], None]:
        return lambda session: vet(session, resolve, tls, permitted, exchanges)
    return connect


def vet(session: requests.Session, resolve: Resolve, tls: ssl.SSLContext,
        permitted: Sequence[ipaddress.IPv4Network], exchanges: list[Exchange]) -> None:
    """Make `session` reach endpoints the gateway's way, noting its exchanges in
    `exchanges`."""
    adapter = VettedAdapter(resolve, tls, permitted, exchanges)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False       # no HTTPS_PROXY, no .netrc credentials
    session.max_redirects = 0       # a redirect is an answer, not an instruction
