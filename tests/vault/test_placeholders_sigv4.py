from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import inject, placeholders, sigv4


def test_placeholders_are_unique_and_findable() -> None:
    p, q = placeholders.new_placeholder(), placeholders.new_placeholder()
    assert p != q and p.startswith("sgp_") and len(p) == 36
    assert placeholders.find(f"Authorization: Bearer {p}") == {p}
    assert placeholders.find(f'{{"key": "{p}", "other": "{q}"}}'.encode()) == {p, q}


def test_placeholder_inside_base64_is_found() -> None:
    p = placeholders.new_placeholder()
    for prefix in ("", "x", "xy", "user:"):
        hidden = base64.b64encode(f"{prefix}{p}".encode()).decode()
        assert p in placeholders.find(f"data={hidden}"), prefix
        urlsafe = base64.urlsafe_b64encode(f"{prefix}{p}".encode()).decode()
        assert p in placeholders.find(urlsafe), prefix


def test_index_binds_and_unbinds() -> None:
    index = placeholders.PlaceholderIndex()
    index.bind("sandbox1", {"TOKEN": "sgp_" + "a" * 32})
    assert index.lookup("sgp_" + "a" * 32) == placeholders.Binding("sandbox1", "TOKEN")
    index.unbind("sandbox1")
    assert index.lookup("sgp_" + "a" * 32) is None


def test_basic_helpers() -> None:
    header = inject.basic("user", "pa:ss")
    assert inject.parse_basic(header) == ("user", "pa:ss")
    assert inject.parse_basic("Bearer x") is None
    assert inject.fill("token {value}", "v") == "token v"


def _botocore_sign(key_id: str, secret: str, body: bytes) -> dict[str, str]:
    request = AWSRequest(method="PUT", url="https://bucket.s3.test/key%20name?acl=&b=2",
                         data=body, headers={"x-amz-content-sha256":
                                             hashlib.sha256(body).hexdigest()})
    signer = S3SigV4Auth(Credentials(key_id, secret), "s3", "eu-west-1")
    signer.add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()} | {"host": "bucket.s3.test"}


def _botocore_verify(headers: dict[str, str], key_id: str, secret: str, body: bytes) -> bool:
    auth = sigv4.parse(headers["authorization"])
    request = AWSRequest(method="PUT", url="https://bucket.s3.test/key%20name?acl=&b=2",
                         data=body, headers={k: headers[k] for k in auth.signed_headers})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = S3SigV4Auth(Credentials(key_id, secret), "s3", "eu-west-1")
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request) == auth.signature


def test_resign_verifies_placeholder_and_signs_with_real_key() -> None:
    body = b"payload"
    headers = _botocore_sign("PLACEHOLDER_ID", "placeholder-secret", body)
    signed = sigv4.SignedRequest("PUT", "/key%20name", "acl=&b=2", headers, body)
    new = sigv4.resign(signed, "placeholder-secret", "AKIAREALKEYID", "real-secret")
    resigned = {**headers, "authorization": new}
    assert "Credential=AKIAREALKEYID/" in new
    assert _botocore_verify(resigned, "AKIAREALKEYID", "real-secret", body)
    assert not _botocore_verify(resigned, "AKIAREALKEYID", "placeholder-secret", body)


def test_resign_refuses_a_signature_made_with_other_credentials() -> None:
    headers = _botocore_sign("PLACEHOLDER_ID", "someone-elses-secret", b"")
    signed = sigv4.SignedRequest("PUT", "/key%20name", "acl=&b=2", headers, b"")
    with pytest.raises(sigv4.SigV4Error, match="does not verify"):
        sigv4.resign(signed, "placeholder-secret", "AKIAREALKEYID", "real-secret")


def test_resign_requires_signed_date() -> None:
    headers = _botocore_sign("ID", "s", b"")
    headers["x-amz-date"] = datetime.datetime(2000, 1, 1).strftime("%Y%m%dT%H%M%SZ")
    signed = sigv4.SignedRequest("PUT", "/key%20name", "acl=&b=2", headers, b"")
    with pytest.raises(sigv4.SigV4Error, match="credential scope date"):
        sigv4.resign(signed, "s", "AKIA", "r")


@settings(max_examples=300, deadline=None)
@given(before=st.binary(max_size=120), after=st.binary(max_size=120),
       urlsafe=st.booleans(), noise=st.binary(max_size=50))
def test_a_placeholder_base64_encoded_anywhere_in_a_longer_text_is_found(
        before: bytes, after: bytes, urlsafe: bool, noise: bytes) -> None:
    p = placeholders.new_placeholder()
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = noise + b" " + encode(before + p.encode() + after) + b" " + noise
    assert p in placeholders.find(text)
