"""A rule's `mcp:` key: its shape (schema errors), its meaning (policies.mcp), and how
`policy test`, `explain`, `diff`, `check` and the precedence rules describe it."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.diff import diff
from policies.lint import check
from policies.loader import PolicyError, load_text
from policies.matcher import CompiledPolicy, Request
from policies.mcp import check_call, check_method, check_response, tool_visible
from policies.precedence import ties
from policies.report import McpCall, explain_rows, mcp_call, trial
from policies.schema import McpSpec

SPEC = McpSpec(tools=["get_*", "list_issues"], deny_tools=["get_secret*"],
               methods=["resources/*", "elicitation/create"], args={"repo": "octo/*"})
RULE = """  - id: gh
    hosts: [mcp.example.test]
    mcp: {tools: ["get_*"], deny_tools: [get_secret], args: {repo: "octo/*"}}
"""


def policy(rules: str, top: str = "") -> CompiledPolicy:
    return load_text(f"version: 1\nname: p\n{top}rules:\n{rules}", "p.yaml")


@pytest.mark.parametrize(("tool", "arguments", "expected"), [
    ("get_issue", {"repo": "octo/a"}, None),
    ("get_secret_key", {"repo": "octo/a"}, "tool_denied"),
    ("delete_repo", {"repo": "octo/a"}, "tool_not_listed"),
    ("get_issue", {"repo": "evil/a"}, "argument"),
    ("get_issue", {"repo": ["octo/a"]}, "argument"),
    ("get_issue", None, "argument"),
    ("GET_ISSUE", {"repo": "octo/a"}, "tool_not_listed"),   # names are case-sensitive
])
def test_calls(tool: str, arguments: dict[str, object] | None, expected: str | None) -> None:
    refusal = check_call(SPEC, tool, arguments)
    assert (refusal.miss if refusal else None) == expected


def test_methods_and_responses() -> None:
    assert check_method(SPEC, "initialize") is None
    assert check_method(SPEC, "tools/list") is None
    assert check_method(SPEC, "resources/read") is None
    assert check_method(SPEC, "prompts/get") is not None
    bare = McpSpec(tools=["*"])
    assert check_response(bare, empty=True) is None          # a ping's answer
    assert check_response(bare, empty=False) is not None
    assert check_response(SPEC, empty=False) is None          # methods names a server request


def test_tools_list_keeps_what_a_call_may_use() -> None:
    assert [t for t in ("get_issue", "get_secret", "list_issues", "delete") if
            tool_visible(SPEC, t)] == ["get_issue", "list_issues"]


@pytest.mark.parametrize(("rule", "message"), [
    ("    action: deny\n    mcp: {tools: [a]}", "a deny rule cannot carry `mcp`"),
    ("    protocols: [tcp]\n    mcp: {tools: [a]}", "add http or https to `protocols`"),
    ("    mcp: {tools: [a], methods: [tools/call]}", "tools/call is decided by `tools`"),
    ("    mcp: {tool: [a]}", "tool"),
    ("    mcp: {tools: [' a']}", "not a tool or method name glob"),
    ("    mcp: {tools: [a], args: {repo: [x]}}", "repo: Input should be a valid string"),
])
def test_shape_errors(rule: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy(f"  - id: r\n    hosts: [a.test]\n{rule}\n")


def test_an_mcp_rule_speaks_http() -> None:
    compiled = policy(RULE)
    assert compiled.rules[0].protocols == frozenset({"http", "https"})
    assert compiled.decide_name("mcp.example.test").allowed
    decision = compiled.decide(Request(443, "https", host="mcp.example.test", method="POST",
                                       path="/mcp"))
    assert decision.grant is not None and decision.grant.mcp is not None


def test_policy_test_answers_for_a_call() -> None:
    compiled = policy(RULE)
    request = Request(443, "https", host="mcp.example.test", method="POST", path="/mcp")
    allowed = trial(compiled, request, mcp=McpCall(tool="get_issue",
                                                   arguments={"repo": "octo/x"}))
    assert allowed.decision.allowed
    assert allowed.steps[-1] == "mcp: tools/call get_issue is allowed by rule gh"
    denied = trial(compiled, request, mcp=McpCall(tool="get_secret",
                                                  arguments={"repo": "octo/x"}))
    assert str(denied.decision.reason) == "mcp_tool_denied"
    assert "deny_tools 'get_secret'" in denied.steps[-1]
    method = trial(compiled, request, mcp=McpCall(method="prompts/get"))
    assert str(method.decision.reason) == "mcp_method_denied"
    plain = trial(compiled, request)
    assert "reads the JSON-RPC body: tools/call for get_*" in plain.steps[-1]
    monitor = trial(policy(RULE, "mode: monitor\n"), request, mcp=McpCall(tool="delete"))
    assert str(monitor.decision.verdict) == "would_deny"


def test_policy_test_on_a_rule_without_mcp_says_so() -> None:
    compiled = policy("  - {id: open, hosts: [mcp.example.test]}\n")
    request = Request(443, "https", host="mcp.example.test", method="POST", path="/mcp")
    result = trial(compiled, request, mcp=McpCall(tool="anything"))
    assert result.decision.allowed and "not looked into" in result.steps[-1]


@pytest.mark.parametrize(("args", "message"), [
    (("get", ("repo",), None), "not NAME=VALUE"),
    ((None, ("repo=x",), None), "--mcp-arg belongs to a tools/call"),
    (("get", (), "prompts/get"), "not both"),
])
def test_mcp_call_errors(args: tuple[str | None, tuple[str, ...], str | None],
                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mcp_call(*args)


def test_explain_shows_it() -> None:
    row = explain_rows(policy(RULE))[0]
    assert "mcp tools/call for get_*; never get_secret; args repo=octo/*" in row["also"]


@pytest.mark.parametrize(("after", "expected"), [
    ('mcp: {tools: ["*"], deny_tools: [get_secret], args: {repo: "octo/*"}}',
     ["widens       rule gh: mcp.tools get_* -> *"]),
    ('mcp: {tools: ["get_*"], args: {repo: "octo/*"}}',
     ["widens       rule gh: mcp.deny_tools get_secret -> none"]),
    ('mcp: {tools: ["get_*"], deny_tools: [get_secret, "get_x*"], args: {repo: "octo/*"}}',
     ["narrows      rule gh: mcp.deny_tools get_secret -> get_secret, get_x*"]),
    ('mcp: {tools: ["get_*"], deny_tools: [get_secret]}',
     ["widens       rule gh: mcp.args repo: octo/* -> none"]),
    ('mcp: {tools: ["get_*"], deny_tools: [get_secret], args: {repo: "octo/*"}, '
     'methods: ["prompts/*"]}', ["widens       rule gh: mcp.methods base only -> prompts/*"]),
    ("{}", None),
])
def test_diff(after: str, expected: list[str] | None) -> None:
    new = RULE.replace(RULE.splitlines()[2].strip(), after) if after != "{}" else \
        "  - id: gh\n    hosts: [mcp.example.test]\n"
    found = [str(c) for c in diff(policy(RULE), policy(new))]
    if expected is None:     # the rule's protocols stay http, https
        assert len(found) == 1
        assert found[0].startswith("widens       rule gh: mcp tools/call for get_*")
        assert found[0].endswith("-> none")
    else:
        assert found == expected


def test_rules_differing_only_in_mcp_tie() -> None:
    rules = RULE + "  - id: gh2\n    hosts: [mcp.example.test]\n    mcp: {tools: ['*']}\n"
    with pytest.raises(PolicyError, match=r"rule gh2: ties with rule gh: .* differ in mcp"):
        policy(rules)
    other_path = rules.replace("hosts: [mcp.example.test]\n    mcp: {tools: ['*']}",
                               "hosts: [mcp.example.test]\n    paths: [/v2]\n"
                               "    mcp: {tools: ['*']}")
    assert ties(policy(other_path)) == []


@pytest.mark.parametrize(("mcp", "expected"), [
    ("{deny_tools: [x]}", "mcp lists no `tools`"),
    ("{tools: [get_a], deny_tools: ['get_*']}", "every tool `tools` names is also in"),
    ("{tools: [get_a]}", None),
])
def test_lint(tmp_path: Path, mcp: str, expected: str | None) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\nname: p\nrules:\n  - id: r\n    hosts: [a.test]\n"
                    f"    mcp: {mcp}\n")
    report = check([path])
    assert report.errors == []
    messages = [w.message for w in report.warnings]
    assert (expected is None and not messages) or any(expected in m for m in messages)
