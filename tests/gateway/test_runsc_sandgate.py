"""runsc-sandgate refuses to create or run a bundle that does not join a network namespace by
path (a hostNetwork pod, or one whose namespace nobody wired), reading config.json as JSON;
the commands the shim runs on an existing container pass; a refusal is one line on stderr
and in runc's JSON log, and runsc is never run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.runsc_sandgate import refusal
from tests.harness import REPO

SHIM = ["--root", "/run/containerd/runc/k8s.io", "--log", "/run/x/log.json",
        "--log-format", "json"]


def bundle(tmp_path: Path, namespaces: Any) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "linux": {"namespaces": namespaces}}))
    return tmp_path


@pytest.fixture
def other_netns(tmp_path: Path) -> str:
    """A file standing for a namespace that is not ours (its identity is what counts)."""
    path = tmp_path / "netns"
    path.write_text("")
    return str(path)


def create(path: Path, *extra: str) -> list[str]:
    return [*SHIM, "create", "--bundle", str(path), "--pid-file", "/run/x/pid", *extra, "c1"]


def test_a_bundle_joining_a_namespace_by_path_is_run(tmp_path: Path, other_netns: str) -> None:
    path = bundle(tmp_path, [{"type": "pid"}, {"type": "network", "path": other_netns}])
    assert refusal(create(path), Path("/")) is None
    assert refusal([*SHIM, "run", f"-bundle={path}", "c1"], Path("/")) is None
    assert refusal(["--debug", "create", "c1"], path) is None   # the bundle is the cwd


@pytest.mark.parametrize(("namespaces", "why"), [
    ([{"type": "pid"}, {"type": "mount"}], "node's network namespace (hostNetwork)"),
    ([{"type": "network"}], "not one the runtime made and named by path"),
    ([{"type": "network", "path": ""}], "not one the runtime made and named by path"),
    ([{"type": "network", "path": "/proc/self/ns/net"}], "node's own network namespace"),
    ([{"type": "network", "path": "/nonexistent/netns"}], "cannot be read"),
    ({"type": "network"}, "cannot read the network namespace"),
])
def test_a_bundle_without_a_namespace_of_its_own_is_refused(
        tmp_path: Path, namespaces: Any, why: str) -> None:
    path = bundle(tmp_path, namespaces)
    for argv in (create(path), [*SHIM, "run", "--bundle", str(path), "c1"],
                 [*SHIM, "restore", "--bundle", str(path), "c1"]):
        reason = refusal(argv, Path("/"))
        assert reason is not None and why in reason


def test_two_network_entries_or_two_bundles_are_refused(tmp_path: Path,
                                                         other_netns: str) -> None:
    good = bundle(tmp_path / "good", [{"type": "network", "path": other_netns}])
    bad = bundle(tmp_path / "bad", [])
    assert refusal(create(good, "--bundle", str(bad)), Path("/")) == \
        "the bundle is given more than once"
    doubled = bundle(tmp_path / "doubled", [{"type": "network", "path": other_netns},
                                            {"type": "network"}])
    assert refusal(create(doubled), Path("/")) is not None


def test_a_missing_or_broken_config_is_refused(tmp_path: Path) -> None:
    assert "cannot read" in (refusal(create(tmp_path), Path("/")) or "")
    (tmp_path / "config.json").write_text('{"linux": {"namespaces": [{"type": "network"')
    assert "cannot read" in (refusal(create(tmp_path), Path("/")) or "")
    # `grep network` would be fooled; JSON is not: the word sits in an annotation only
    (tmp_path / "config.json").write_text(json.dumps({
        "annotations": {"x": '{"type": "network", "path": "/run/netns/x"}'},
        "linux": {"namespaces": [{"type": "pid"}]}}))
    assert "hostNetwork" in (refusal(create(tmp_path), Path("/")) or "")


@pytest.mark.parametrize("argv", [
    [*SHIM, "start", "c1"], [*SHIM, "state", "c1"], [*SHIM, "kill", "c1", "9"],
    [*SHIM, "delete", "--force", "c1"], [*SHIM, "exec", "--process", "/p.json", "c1"],
    ["--version"], [],
])
def test_commands_on_an_existing_container_pass(argv: list[str]) -> None:
    assert refusal(argv, Path("/nonexistent")) is None


@pytest.mark.parametrize(("argv", "why"), [
    ([*SHIM, "do", "sh"], "runsc do is not run"),
    ([*SHIM, "install"], "runsc install is not run"),
    (["--strange", "x", "create", "c1"], "unknown runsc flag '--strange'"),
])
def test_other_commands_and_unknown_flags_are_refused(argv: list[str], why: str) -> None:
    assert (refusal(argv, Path("/")) or "").startswith(why)


def test_the_wrapper_refuses_in_one_line_and_logs_it(tmp_path: Path) -> None:
    path = bundle(tmp_path / "b", [{"type": "pid"}])
    log = tmp_path / "log.json"
    result = subprocess.run(
        [sys.executable, "-m", "gateway.runsc_sandgate", "--root", str(tmp_path), "--log",
         str(log), "--log-format", "json", "create", "--bundle", str(path), "c1"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "PATH": "/nonexistent"})   # runsc would not even be found
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "hostNetwork" in result.stderr
    assert json.loads(log.read_text())["msg"] == result.stderr.strip()
