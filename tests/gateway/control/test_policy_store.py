"""The policy store: API writes land in the data dir, the packaged policies are read-only
defaults behind it, and hostile YAML is refused on every way in (API, hot reload) while the
last good version keeps deciding."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.control.policy_store import PolicyStore
from gateway.errors import BadRequest
from policies import PACKAGED_DIRS

TESTDATA = Path(__file__).resolve().parents[2] / "policies" / "testdata"
BOMB = (TESTDATA / "alias_bomb.yaml").read_text()
WEB = "version: 1\nname: web\nrules:\n  - id: w\n    hosts: [web.test]\n"


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    return PolicyStore(tmp_path / "policies")


def test_writes_go_to_the_store_and_packaged_policies_stay_read_only(store: PolicyStore) -> None:
    packaged = sorted(p.name for d in PACKAGED_DIRS for p in d.glob("*.yaml"))
    store.put("web", WEB)
    assert (store.policy_dir / "web.yaml").read_text() == WEB
    assert sorted(p.name for d in PACKAGED_DIRS for p in d.glob("*.yaml")) == packaged
    entries = {e["name"]: e for e in store.catalogue()}
    assert entries["web"]["read_only"] is False
    assert entries["default"]["read_only"] is True and entries["pypi"]["read_only"] is True
    assert store.get("pypi")["read_only"] is True
    with pytest.raises(BadRequest, match="packaged with sandgate and read-only"):
        store.delete("pypi")


def test_a_store_policy_overrides_a_packaged_one_and_may_extend_one(store: PolicyStore) -> None:
    store.put("pypi", "version: 1\nname: pypi\nrules: []\n")
    assert store.path_for("pypi") == (store.policy_dir / "pypi.yaml").resolve()
    assert store.acquire("pypi").policy.rules == []
    store.delete("pypi")
    assert store.path_for("pypi").parent == PACKAGED_DIRS[1]
    store.put("agent", "version: 1\nname: agent\nextends: [npm]\nrules: []\n")
    assert [r.id for r in store.acquire("agent").policy.rules] == ["npm/npm-registry"]


def test_the_api_refuses_a_bomb_at_once(store: PolicyStore) -> None:
    with pytest.raises(BadRequest) as info:
        store.put("bomb", BOMB)
    assert "bomb.yaml:2:7: YAML anchors (&a) are not allowed" in info.value.message
    assert not (store.policy_dir / "bomb.yaml").exists()


def test_hot_reload_refuses_a_bomb_and_keeps_the_last_good_version(store: PolicyStore) -> None:
    store.put("web", WEB)
    handle = store.acquire("web")
    good = handle.policy.version
    (store.policy_dir / "web.yaml").write_text(BOMB)
    assert store.refresh() == []
    assert handle.policy.version == good
    assert handle.error is not None and "YAML anchors (&a) are not allowed" in handle.error


def test_policy_test_through_the_store(store: PolicyStore) -> None:
    store.put("web", WEB + "    headers: {x-kind: push}\n")
    answer = store.test("web", "GET", "https://web.test/", {"X-Kind": "pull"})
    assert (answer["decision"], answer["nearest"]) == \
        ("deny", ["w: header x-kind: 'pull' does not match 'push'"])
    assert store.test("web", "GET", "https://web.test/", {"X-Kind": "push"})["decision"] == "allow"
