"""`policy learn`: path generalisation, host grouping under registrable domains, rules per
method set, bound credentials, a starting policy; and the rendered YAML, which must load and
pass `policy check` without a warning and allow exactly what was recorded."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from policies.decision import Verdict
from policies.learn import generalise_path, group_hosts, learn
from policies.learn_yaml import render
from policies.lint import check
from policies.loader import load_text
from policies.matcher import CompiledPolicy, Request
from policies.recorded import Recorded

START = datetime(2026, 11, 30, 12, 0, 0)


def seen(host: str, path: str | None = "/", method: str | None = "GET", *,
         protocol: str = "https", port: int = 443, at: int = 0, **extra: Any) -> Recorded:
    return Recorded(time=START + timedelta(seconds=at), passed=extra.pop("passed", True),
                    protocol=protocol, host=host, port=port, method=method, path=path, **extra)


def learned_policy(records: list[Recorded], **kw: Any) -> tuple[str, CompiledPolicy]:
    text = render(learn(records, **kw), name="learned", header=["test"])
    return text, load_text(text, "learned.yaml")


def allowed(policy: CompiledPolicy, request: Request) -> bool:
    return policy.decide(request).verdict == Verdict.ALLOW


@pytest.mark.parametrize(("path", "glob"), [
    ("/", "/"),
    ("/repos/octo/hello/issues", "/repos/octo/hello/issues"),
    ("/repos/1234/issues/", "/repos/*/issues/"),
    ("/v1/users/9f1c2e3a-1111-2222-3333-444455556666", "/v1/users/*"),
    ("/git/commits/3f2a9c1", "/git/commits/3f2a9c1".replace("3f2a9c1", "*")),
    ("/blobs/d41d8cd98f00b204e9800998ecf8427e", "/blobs/*"),
    ("/packages/foo/1.2.3/foo-1.2.3.tar.gz", "/packages/foo/*/foo-*.tar.gz"),
    ("/releases/v2.0.1-rc1", "/releases/*"),
    ("/files/aZ3kQ9pL2mX8vB7nC4dF1gH", "/files/*"),
    ("/a*b/c", "/*/c"),                  # a literal star would read as a glob
    ("/cafe/beaded/deadbeef", "/cafe/beaded/deadbeef"),   # words, not hashes (no digit)
])
def test_paths_generalise_ids_hashes_numbers_and_versions(path: str, glob: str) -> None:
    assert generalise_path(path) == glob


def test_wildcard_only_from_enough_siblings_under_one_registrable_domain() -> None:
    names = [f"n{i}.cdn.example" for i in range(5)] + ["a.other.example", "b.other.example"]
    chosen = group_hosts(names, min_siblings=5)
    assert {chosen[n] for n in names[:5]} == {"*.cdn.example"}
    assert chosen["a.other.example"] == "a.other.example"
    # the registrable domain itself among them: `.domain` covers it too
    chosen = group_hosts([*names[:4], "cdn.example"], min_siblings=5)
    assert set(chosen.values()) == {".cdn.example"}


def test_never_a_wildcard_across_a_public_suffix() -> None:
    # each github.io and co.uk name is its own registrable domain: no siblings to group
    names = [f"user{i}.github.io" for i in range(6)] + [f"shop{i}.co.uk" for i in range(6)]
    chosen = group_hosts(names, min_siblings=2)
    assert chosen == {n: n for n in names}


def test_names_with_a_credential_stay_exact() -> None:
    names = [f"n{i}.api.example" for i in range(6)]
    chosen = group_hosts(names, exact=["n0.api.example"], min_siblings=5)
    assert chosen["n0.api.example"] == "n0.api.example"
    assert chosen["n1.api.example"] == "*.api.example"


def test_rules_per_method_set_with_hits_and_examples() -> None:
    records = [seen("api.example.com", "/repos/1/issues", at=1),
               seen("api.example.com", "/repos/2/issues", at=5),
               seen("api.example.com", "/repos/2/issues", "POST", at=3),
               seen("api.example.com", "/user", at=2),
               seen("db.example.com", None, None, protocol="tcp", port=5432, at=4),
               seen("203.0.113.7", "/x", protocol="http", port=80, at=6)]
    text, policy = learned_policy(records)
    assert "  # 3 requests, first 2026-11-30T12:00:01Z, last 2026-11-30T12:00:05Z\n" \
           "  #   /repos/*/issues: e.g. /repos/1/issues, /repos/2/issues\n" \
           "  - id: api.example.com:get-post\n" in text
    specs = {r.id: r.spec for r in policy.rules}
    assert specs["api.example.com:get-post"].methods == ["GET", "POST"]
    assert specs["api.example.com:get-post"].paths == ["/repos/*/issues"]
    assert specs["api.example.com:get"].paths == ["/user"]
    assert specs["db.example.com:tcp"].protocols == ["tcp"]
    assert specs["db.example.com:tcp"].ports == [5432]
    assert specs["203.0.113.7"].addresses == ["203.0.113.7/32"]
    # what was recorded passes; a new method, path, port or host does not
    for record in records:
        assert allowed(policy, record.request()), record
    ask = Request(port=443, protocol="https", host="api.example.com", method="DELETE",
                  path="/repos/1/issues")
    assert not allowed(policy, ask)
    assert not allowed(policy, Request(443, "https", "api.example.com", method="POST",
                                       path="/user"))
    assert not allowed(policy, Request(8443, "https", "api.example.com", method="GET",
                                       path="/user"))
    assert not allowed(policy, Request(443, "https", "new.example.com", method="GET",
                                       path="/user"))


def test_output_passes_check_without_warnings(tmp_path: Path) -> None:
    records = [seen(f"n{i}.cdn.example", f"/assets/{i}/app.js") for i in range(6)]
    records += [seen("api.example.com", "/a/b"), seen("api.example.com", "/a/b", "PUT")]
    text, _ = learned_policy(records)
    path = tmp_path / "learned.yaml"
    path.write_text(text)
    report = check([path])
    assert (report.errors, report.warnings) == ([], [])


def test_denied_requests_are_not_learned() -> None:
    learned = learn([seen("a.example.com"), seen("evil.example.net", passed=False)])
    assert learned.skipped == 1
    assert [r.spec.hosts for r in learned.rules] == [["a.example.com"]]


def test_a_credential_is_bound_where_the_recording_rule_injected_it() -> None:
    recording = load_text(
        "version: 1\nname: rec\nmode: monitor\nrules:\n"
        "  - id: gh\n    hosts: [api.github.com]\n"
        "    inject: [{secret: GH_TOKEN, as: bearer}, {secret: OTHER, as: bearer}]\n",
        "rec.yaml")
    rule = {r.id: r.spec for r in recording.rules}
    records = [seen("api.github.com", "/user", secrets=("GH_TOKEN",), policy="rec", rule="gh"),
               seen("api.github.com", "/repos/o/r", secrets=("GH_TOKEN",), policy="rec",
                    rule="gh"),
               seen("uploads.example", "/x", secrets=("LOST",), policy="gone", rule="r")]
    records.append(seen("api.github.com", "/zen"))     # no credential there
    learned = learn(records, recording_rule=lambda p, r: rule.get(r or "") if p == "rec" else None)
    assert learned.unbound == ["LOST"]
    text = render(learned, name="learned")
    assert "inject:\n    - {secret: GH_TOKEN, as: bearer}" in text
    policy = load_text(text, "learned.yaml")
    gh = {tuple(r.spec.paths): r.spec for r in policy.rules if r.spec.hosts == ["api.github.com"]}
    assert [(i.secret, i.form) for i in gh[("/repos/o/r", "/user")].inject] == \
        [("GH_TOKEN", "bearer")]
    assert gh[("/zen",)].inject == []


def test_one_binding_for_the_host_when_globs_of_different_credentials_overlap() -> None:
    recording = load_text("version: 1\nname: rec\nrules:\n  - id: r\n    hosts: [a.example]\n"
                          "    inject: [{secret: T, as: bearer}]\n", "rec.yaml")
    records = [seen("a.example", "/a/123", secrets=("T",), policy="rec", rule="r"),
               seen("a.example", "/456/b")]     # /a/b would match both globs, equally
    learned = learn(records, recording_rule=lambda _p, _r: recording.rules[0].spec)
    policy = load_text(render(learned, name="learned"), "learned.yaml")
    assert [[i.secret for i in r.spec.inject] for r in policy.rules] == [["T"]]
    assert policy.rules[0].spec.paths == ["/*/b", "/a/*"]


def test_from_a_policy_keeps_its_rules_and_adds_what_is_missing() -> None:
    base = load_text("version: 1\nname: team\nextends: []\nlimits: {connections: 32}\n"
                     "rules:\n  - id: read\n    hosts: [api.example.com]\n"
                     "    methods: [GET]\n", "team.yaml")
    records = [seen("api.example.com", "/x"), seen("api.example.com", "/x", "POST")]
    learned = learn(records, base=base, taken_ids=["read"])
    assert learned.covered == 1
    text = render(learned, name="team", base=base.spec)
    policy = load_text(text, "team.yaml")
    assert policy.limits.connections == 32
    assert [r.id for r in policy.rules] == ["read", "api.example.com"]
    assert policy.rules[1].spec.methods == ["POST"]


def test_globs_differing_in_one_segment_merge_from_three_variants() -> None:
    names = ["requests", "idna", "certifi"]
    learned = learn([seen("pypi.org", f"/simple/{n}/") for n in names]
                    + [seen("pypi.org", "/pypi/a/json"), seen("pypi.org", "/pypi/b/json"),
                       seen("pypi.org", "/pypi/c/json", "POST")])
    paths = {tuple(r.spec.methods): r.spec.paths for r in learned.rules}
    # two GET variants of /pypi/*/json are not enough; the POST one is used otherwise
    assert paths == {("GET",): ["/pypi/a/json", "/pypi/b/json", "/simple/*/"],
                     ("POST",): ["/pypi/c/json"]}
    assert learned.rules[0].examples["/simple/*/"] == [f"/simple/{n}/" for n in names]


def test_an_ambiguous_path_is_not_learned() -> None:
    learned = learn([seen("a.example", "/x%2fy"), seen("a.example", "/ok")])
    assert [r.spec.paths for r in learned.rules] == [["/ok"]]


def test_folding_many_globs_never_opens_every_path_of_a_host() -> None:
    """Past the glob limit globs fold under their literal first segment; `/` and a starred
    first segment (`/1` is `/*`) stay as they are: `/**` or `/*/**` would open the host."""
    deep = [seen("a.example", "/files/" + "/".join(["x"] * n)) for n in range(1, 40)]
    learned = learn([seen("a.example", "/"), seen("a.example", "/1"), *deep])
    (rule,) = learned.rules
    assert sorted(rule.spec.paths) == ["/", "/*", "/files/**"]
