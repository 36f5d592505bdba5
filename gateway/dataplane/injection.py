"""Where a credential may sit in a request, and writing it there.

Each injection form has one location: `bearer` and `basic` the Authorization header, `header`
the named header, `query` the named query parameter, `aws-sigv4` the signature (the access
key id placeholder in the Authorization header's Credential). A placeholder there, in the
form's own shape, becomes the real value; the form is added when the sandbox sent nothing
there. A placeholder anywhere else in the request head (path, other headers, other query
parameters, cookies, the pseudo-headers) is what the tripwire looks for: `head_texts` yields
everything but the legitimate spots. (`body`, the opt-in form, has no location in the head:
its placeholder is replaced in the body, gateway.dataplane.bodies.)
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from mitmproxy import http

from policies.schema import (
    Inject,
    InjectBasic,
    InjectBearer,
    InjectHeader,
    InjectQuery,
    InjectSigV4,
)
from vault import inject as forms
from vault import sigv4


def secret_names(spec: Inject) -> tuple[str, ...]:
    return (spec.secret, spec.access_key_id) if isinstance(spec, InjectSigV4) else (spec.secret,)


def location(spec: Inject) -> tuple[str, str] | None:
    """("header", lower-case name) or ("query", parameter) of the form; None for `body`."""
    if isinstance(spec, InjectBearer | InjectBasic | InjectSigV4):
        return ("header", "authorization")
    if isinstance(spec, InjectHeader):
        return ("header", spec.header)
    if isinstance(spec, InjectQuery):
        return ("query", spec.param)
    return None


_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


def holds(spec: Inject, value: str, placeholders: Mapping[str, str],
          username: str | None) -> bool:
    """Whether `value`, found at the form's location, is the form filled with this sandbox's
    placeholder (`placeholders`: secret name -> placeholder; `username`: a basic form's fixed
    user name)."""
    own = placeholders[spec.secret]
    if isinstance(spec, InjectBearer):
        match = _BEARER.match(value)
        return match is not None and match[1] == own
    if isinstance(spec, InjectHeader):
        return value == forms.fill(spec.template, own)
    if isinstance(spec, InjectBasic):
        parsed = forms.parse_basic(value)
        user = placeholders[spec.username_secret] if spec.username_secret else username
        return parsed is not None and parsed[1] == own and (user is None or parsed[0] == user)
    if isinstance(spec, InjectQuery):
        return value == own
    if isinstance(spec, InjectSigV4):
        try:
            return sigv4.parse(value).access_key_id == placeholders[spec.access_key_id]
        except sigv4.SigV4Error:
            return False
    return False


@dataclass
class Spots:
    """The legitimate places of the credentials in one request's head."""

    headers: set[int] = field(default_factory=set)      # indices into headers.fields
    query: set[int] = field(default_factory=set)        # indices into query.fields
    present: set[int] = field(default_factory=set)      # which specs the sandbox sent


def query_fields(request: http.Request) -> tuple[tuple[str, str], ...]:
    """`request.query.fields`, which mitmproxy re-parses from the whole URL on every read;
    a path without `?` has none (the common case, read for nothing before)."""
    return request.query.fields if "?" in request.path else ()


def find_spots(request: http.Request, specs: list[Inject], placeholders: Mapping[str, str],
               usernames: Mapping[int, str | None],
               query: tuple[tuple[str, str], ...] | None = None) -> Spots:
    """For each spec, the one header or query parameter that holds it in the right shape.
    A location given twice is no location: the tripwire then sees both. `query`: the
    request's query fields, when the caller has them."""
    spots = Spots()
    query = query_fields(request) if query is None else query
    for index, spec in enumerate(specs):
        where = location(spec)
        if where is None:
            continue
        kind, name = where
        if kind == "header":
            candidates = [i for i, (k, _) in enumerate(request.headers.fields)
                          if k.decode("latin-1").lower() == name]
            values = [request.headers.fields[i][1].decode("latin-1") for i in candidates]
            chosen = spots.headers
        else:
            candidates = [i for i, (k, _) in enumerate(query) if k == name]
            values = [query[i][1] for i in candidates]
            chosen = spots.query
        if len(candidates) == 1 and holds(spec, values[0], placeholders, usernames.get(index)):
            chosen.add(candidates[0])
            spots.present.add(index)
    return spots


def head_texts(request: http.Request, spots: Spots,
               query: tuple[tuple[str, str], ...] | None = None) -> Iterator[str]:
    """Everything in the request head a placeholder must not be in, percent-decoded too."""
    path, _, _ = request.path.partition("?")
    yield from (path, urllib.parse.unquote(path))
    for index, (param, given) in enumerate(query_fields(request) if query is None else query):
        if index not in spots.query:
            yield f"{param}={given}"
    yield from (request.method, request.scheme, request.authority or "")
    for index, (key, value) in enumerate(request.headers.fields):
        if index not in spots.headers:
            text = value.decode("latin-1")
            yield from (key.decode("latin-1"), text, urllib.parse.unquote_plus(text))


def render(spec: Inject, value: str, username: str) -> str | None:
    """The header value the form writes (None for forms that write no header)."""
    if isinstance(spec, InjectBearer):
        return forms.bearer(value)
    if isinstance(spec, InjectHeader):
        return forms.fill(spec.template, value)
    if isinstance(spec, InjectBasic):
        return forms.basic(username, value)
    return None


def write(request: http.Request, spec: Inject, real: str, username: str,
          present: bool) -> None:
    """Put the real value at the form's location: over the placeholder the sandbox sent
    there, or as the whole form when it sent nothing there."""
    if isinstance(spec, InjectQuery):
        if present or spec.param not in request.query:
            request.query[spec.param] = real
        return
    value = render(spec, real, username)
    if value is None:
        return
    name = spec.header if isinstance(spec, InjectHeader) else "authorization"
    if present or name not in request.headers:
        request.headers[name] = value


NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


def bodiless(request: http.Request) -> bool:
    """An HTTP/2 or 3 request of a method that carries no body, sent without a length: any
    body that follows is refused as it streams (gateway.dataplane.addons.bodies), so it is
    signed over the empty body at once and never held."""
    return (request.is_http2 or request.is_http3) and request.method in NO_BODY and \
        "content-length" not in request.headers and "transfer-encoding" not in request.headers
