"""AWS Signature Version 4: verify what a sandbox signed with placeholder credentials, and
sign the same request again with the real ones.

Only the Authorization-header form is handled (not presigned URLs). The canonical request is
rebuilt from the request exactly as the sandbox sent it; both path conventions (S3's single
URI-encoding and the double encoding of other services) are tried when verifying, and the
one that verified is used to re-sign.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, replace

ALGORITHM = "AWS4-HMAC-SHA256"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-f]{64})\s*$")


class SigV4Error(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    def header(self) -> str:
        return (f"{ALGORITHM} Credential={self.access_key_id}/{self.scope}, "
                f"SignedHeaders={';'.join(self.signed_headers)}, Signature={self.signature}")


def parse(value: str) -> Authorization:
    match = _AUTH.match(value.strip())
    if not match:
        raise SigV4Error("not an AWS4-HMAC-SHA256 Authorization header")
    parts = match["cred"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SigV4Error("malformed SigV4 credential scope")
    return Authorization(parts[0], parts[1], parts[2], parts[3],
                         tuple(match["signed"].split(";")), match["sig"])


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


def _canonical_path(raw_path: str, double: bool) -> str:
    path = raw_path or "/"
    if not double:
        return path
    return "/".join(_quote(segment) for segment in path.split("/"))


def _canonical_query(raw_query: str) -> str:
    pairs = []
    for item in raw_query.split("&") if raw_query else []:
        key, _, value = item.partition("=")
        pairs.append((_quote(urllib.parse.unquote(key)), _quote(urllib.parse.unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _canonical_headers(headers: Mapping[str, str], signed: tuple[str, ...]) -> str:
    lines = []
    for name in signed:
        if name not in headers:
            raise SigV4Error(f"signed header {name!r} is missing from the request")
        lines.append(f"{name}:{' '.join(headers[name].split())}\n")
    return "".join(lines)


def _signature(secret: str, auth: Authorization, amz_date: str, canonical: str) -> str:
    to_sign = "\n".join([ALGORITHM, amz_date, auth.scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (auth.date, auth.region, auth.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedRequest:
    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]     # lower-case names
    body: bytes

    def canonical(self, auth: Authorization, double: bool) -> str:
        payload = self.headers.get("x-amz-content-sha256") or hashlib.sha256(self.body).hexdigest()
        return "\n".join([self.method.upper(), _canonical_path(self.raw_path, double),
                          _canonical_query(self.raw_query),
                          _canonical_headers(self.headers, auth.signed_headers),
                          ";".join(auth.signed_headers), payload])


def resign(request: SignedRequest, placeholder_secret: str, real_access_key_id: str,
           real_secret: str) -> str:
    """Verify the request's signature against the placeholder secret; return the
    Authorization header signed with the real credentials. Raises SigV4Error."""
    auth = parse(request.headers.get("authorization", ""))
    amz_date = request.headers.get("x-amz-date")
    if not amz_date or "x-amz-date" not in auth.signed_headers:
        raise SigV4Error("x-amz-date must be present and signed")
    if not amz_date.startswith(auth.date):
        raise SigV4Error("x-amz-date does not match the credential scope date")
    for double in (False, True):
        canonical = request.canonical(auth, double)
        expected = _signature(placeholder_secret, auth, amz_date, canonical)
        if hmac.compare_digest(expected, auth.signature):
            real = replace(auth, access_key_id=real_access_key_id)
            return replace(real, signature=_signature(real_secret, real, amz_date,
                                                      canonical)).header()
    raise SigV4Error("the SigV4 signature does not verify with the sandbox's credentials")
