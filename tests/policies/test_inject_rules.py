"""Credential injection in the policy language: over HTTPS to named hosts unless the policy
opts out knowingly, and the `body` form."""

from __future__ import annotations

import re

import pytest

from policies.loader import PolicyError, load_text
from policies.matcher import Request
from policies.report import explain_rows


def policy(rule: str) -> str:
    return f"version: 1\nname: p\nrules:\n  - id: r\n    hosts: [api.example.test]\n{rule}"


def test_a_rule_that_injects_speaks_https_only_unless_told() -> None:
    compiled = load_text(policy("    inject: [{secret: T, as: bearer}]\n"), "p.yaml")
    allowed = compiled.decide(Request(port=443, protocol="https", host="api.example.test"))
    plain = compiled.decide(Request(port=80, protocol="http", host="api.example.test"))
    assert allowed.allowed and not plain.allowed
    (row,) = explain_rows(compiled)
    assert row["protocols"] == "https"


@pytest.mark.parametrize(("rule", "message"), [
    ("    protocols: [http, https]\n    inject: [{secret: T, as: bearer}]\n",
     "inject over plain http sends the credential in clear text"),
    ("    inject: [{secret: T, as: bearer}]\n    hosts: ['*.example.test']\n",
     "inject to wildcard hosts"),
])
def test_cleartext_and_wildcard_injection_need_an_explicit_opt_in(rule: str,
                                                                   message: str) -> None:
    text = policy(rule).replace("    hosts: [api.example.test]\n", "", 1) \
        if "hosts: ['*" in rule else policy(rule)
    with pytest.raises(PolicyError, match=re.escape(message)):
        load_text(text, "p.yaml")
    opt_in = "allow_cleartext_inject" if "http" in message else "allow_wildcard_inject"
    compiled = load_text(text + f"    {opt_in}: true\n", "p.yaml")
    assert compiled.rules[0].spec.inject


def test_the_body_form() -> None:
    compiled = load_text(policy("    inject: [{secret: T, as: body}]\n"), "p.yaml")
    (spec,) = compiled.rules[0].spec.inject
    assert spec.form == "body" and spec.secret == "T"
