"""The policy YAML loader treats its input as hostile: plain data only, within limits, and
each refusal says where and why."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from policies import yamlsource
from policies.loader import PolicyError, load_file, read
from policies.yamlsource import YamlSyntaxError, load

TESTDATA = Path(__file__).parent / "testdata"


def refusal(text: str) -> str:
    with pytest.raises(YamlSyntaxError) as info:
        load(text)
    position = info.value.position
    return f"{position.line}:{position.col}: {info.value}"


def test_the_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = (TESTDATA / "alias_bomb.yaml").read_text()
    assert len(bomb) < 400
    start = time.process_time()
    assert refusal(bomb) == ("2:7: YAML anchors (&a) are not allowed in a policy; write each "
                             "value out")
    assert time.process_time() - start < 1   # refused at the first anchor, not expanded


@pytest.mark.parametrize(("text", "message"), [
    ("a: *x\n", "1:4: YAML aliases (*name) are not allowed in a policy; write the value out"),
    ("a: &x 1\n", "1:4: YAML anchors (&x) are not allowed in a policy; write each value out"),
    ("<<: {a: 1}\n", "1:1: YAML merge keys (<<) are not allowed in a policy; write the keys out"),
    ("a: !!python/object:os.system x\n", "1:4: YAML tags (tag:yaml.org,2002:python/object:"
                                         "os.system) are not allowed in a policy; write plain "
                                         "values"),
    ("a: !custom x\n", "1:4: YAML tags (!custom) are not allowed in a policy; write plain "
                       "values"),
    ("a: !!str 1\n", "1:4: YAML tags (tag:yaml.org,2002:str) are not allowed in a policy; "
                     "write plain values"),
    ("a: 1\n---\nb: 2\n", "2:1: a policy file holds one YAML document; remove '---'"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "1:35: YAML nested deeper than 32 levels"),
    ("? [a]\n: b\n", "1:3: mapping keys must be plain names"),
    ("a: 1\na: 2\n", "2:1: duplicate key 'a'"),
])
def test_anything_but_plain_data_is_refused(text: str, message: str) -> None:
    assert refusal(text) == message


def test_a_quoted_merge_key_is_just_a_key() -> None:
    assert load('"<<": 1\n').data == {"<<": 1}


def test_plain_values_and_positions() -> None:
    located = load("a: [1, 0x1f, 1.5, true, no, null, '2', 2026-01-01, ~]\nb:\n  c: d\n")
    assert located.data == {"a": [1, 31, 1.5, True, "no", None, "2", "2026-01-01", None],
                            "b": {"c": "d"}}
    assert located.position(("b", "c")) == yamlsource.Position(3, 6)
    assert located.position(("b", "<key>", "c")) == yamlsource.Position(3, 3)
    assert located.position(("a", 3)) == yamlsource.Position(1, 19)


def test_size_value_count_and_time_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsource, "MAX_BYTES", 100)
    assert refusal("a: " + "x" * 100) == ("1:1: policy is 103 bytes, more than the 100 allowed; "
                                          "split it into several policies joined by `extends`")
    monkeypatch.setattr(yamlsource, "MAX_BYTES", 1 << 20)
    monkeypatch.setattr(yamlsource, "MAX_NODES", 10)
    assert refusal("a: [" + ", ".join("x" * 10) + "]") == (
        "1:26: YAML: more than 10 values; split the policy into smaller files")
    monkeypatch.setattr(yamlsource, "MAX_NODES", 1000)
    monkeypatch.setattr(yamlsource, "PARSE_SECONDS", -1.0)  # a deadline already passed
    assert refusal("a: 1\n").endswith("parsing took longer than -1 s; split the policy into "
                                      "smaller files")


def test_files_over_the_limit_are_refused_unread(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsource, "MAX_BYTES", 64)
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\nname: big\n" + "# padding\n" * 10)
    assert [str(e) for e in read(big).errors] == [
        f"{big}:0:0: policy is 121 bytes, more than the 64 allowed; split it into several "
        "policies joined by `extends`"]


def test_a_fifo_is_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as info:
        load_file(fifo)   # opening a FIFO for reading would block until a writer came
    assert str(info.value) == f"{fifo}:0:0: not a regular file"
