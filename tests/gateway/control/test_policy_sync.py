"""Policy revisions shared through the database: published by one gateway, applied by the
others in order, deletions included, a hand edit not undone by a restart."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from gateway.control.policy_sync import PolicySync
from gateway.db import make_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'shared.db'}")
    yield engine
    engine.dispose()


def gateway(engine: Engine, root: Path, name: str) -> PolicySync:
    return PolicySync(engine, root / name / "policies", name, root / name / "seen")


def test_a_published_policy_reaches_another_gateway(engine: Engine, tmp_path: Path) -> None:
    one, other = gateway(engine, tmp_path, "one"), gateway(engine, tmp_path, "other")
    one.publish("web", "version: 1\nname: web\n")
    assert other.pull() == ["web"]
    assert (other.policy_dir / "web.yaml").read_text() == "version: 1\nname: web\n"
    assert other.pull() == []                       # applied once
    one.publish("web", None)
    assert other.pull() == ["web"]
    assert not (other.policy_dir / "web.yaml").exists()


def test_revisions_apply_in_order(engine: Engine, tmp_path: Path) -> None:
    one, other = gateway(engine, tmp_path, "one"), gateway(engine, tmp_path, "other")
    for text in ("a", "b", "c"):
        one.publish("p", text)
    other.pull()
    assert (other.policy_dir / "p.yaml").read_text() == "c"


def test_a_restart_does_not_undo_a_hand_edit(engine: Engine, tmp_path: Path) -> None:
    one, other = gateway(engine, tmp_path, "one"), gateway(engine, tmp_path, "other")
    one.publish("p", "from the api")
    other.pull()
    (other.policy_dir / "p.yaml").write_text("edited by hand")
    restarted = gateway(engine, tmp_path, "other")   # same data dir
    assert restarted.pull() == []
    assert (other.policy_dir / "p.yaml").read_text() == "edited by hand"
    newcomer = gateway(engine, tmp_path, "new")       # a fresh data dir gets the revision
    assert newcomer.pull() == ["p"]


def test_concurrent_publishers_get_distinct_revisions(engine: Engine, tmp_path: Path) -> None:
    syncs = [gateway(engine, tmp_path, f"g{i}") for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        revisions = list(pool.map(lambda i: syncs[i % 4].publish(f"p{i}", str(i)), range(20)))
    assert sorted(revisions) == list(range(1, 21))
    reader = gateway(engine, tmp_path, "reader")
    assert sorted(reader.pull()) == sorted(f"p{i}" for i in range(20))
