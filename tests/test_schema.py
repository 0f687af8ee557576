"""``hrnet_core.schema``: the one strict typed-YAML validator (dataclass tree from a mapping) behind the recipes, the
paper tables and the sweep files (issue 10)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import pytest

from hrnet_core.schema import KEY, SchemaError, build_dataclass, check_keys, coerce, invalid


@dataclass
class Optim:
    """A nested section with defaults."""

    name: str = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Train:
    """A section with required keys, a nested dataclass and optional values."""

    epochs: int
    optimizer: Optim = field(default_factory=Optim)
    warmup: int | None = None
    amp: bool = False


@dataclass
class Top:
    """The top level: required nested section, optional nested section, lists, dicts, tuples, Literal, Any."""

    name: str
    train: Train
    mode: Literal["max", "min"] = "max"
    extra: Optim | None = None
    tags: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, int] | None = None
    sources: tuple[str, ...] = ()
    items: list[Train] = field(default_factory=list)
    anything: Any = None


class MyError(ValueError):
    """A caller's own error class."""


def _msg(data: Any, cls: type = Top, **kw: Any) -> str:
    with pytest.raises(SchemaError) as e:
        build_dataclass(cls, data, source="f.yaml", **kw)
    return str(e.value)


def test_builds_the_tree_with_defaults_and_conversions():
    top = build_dataclass(Top, {"name": 7, "train": {"epochs": 2, "optimizer": {"lr": "1e-4", "betas": [1, 2]}},
                                "tags": {"a": 1}, "shape": [3, 4], "sources": ["x", "y"],
                                "items": [{"epochs": 1}], "anything": {"k": [1]}}, source="f.yaml")
    assert top == Top(name="7", train=Train(epochs=2, optimizer=Optim("adam", 1e-4, [1.0, 2.0])), tags={"a": 1.0},
                      shape=(3, 4), sources=("x", "y"), items=[Train(epochs=1)], anything={"k": [1]})
    assert isinstance(top.train.optimizer.lr, float) and isinstance(top.tags["a"], float)
    assert build_dataclass(Top, {"name": "n", "train": {"epochs": 1}, "extra": None}, source="s").extra is None


def test_unknown_key_names_the_dotted_key_the_source_and_the_allowed_keys():
    assert _msg({"name": "n", "train": {"epochs": 1, "optimizer": {"lr": 1, "lrr": 2}}}) == (
        "unknown key train.optimizer.lrr (f.yaml); allowed under train.optimizer: name, lr, betas")
    assert _msg({"name": "n", "train": {"epochs": 1}, "zeta": 1, "alpha": 2}) == (
        "unknown key alpha (f.yaml); allowed under the top level: name, train, mode, extra, tags, shape, sources, "
        "items, anything")


def test_missing_key():
    assert _msg({"name": "n", "train": {"warmup": 3}}) == "missing key train.epochs (f.yaml)"
    assert _msg({"train": {"epochs": 1}}, prefix="cfg.") == "missing key cfg.name (f.yaml)"


@pytest.mark.parametrize("train, expected", [
    ({"epochs": 2.0}, "train.epochs: expected an integer, got 2.0 (f.yaml)"),
    ({"epochs": True}, "train.epochs: expected an integer, got True (f.yaml)"),
    ({"epochs": 1, "amp": "yes"}, "train.amp: expected true/false, got 'yes' (f.yaml)"),
    ({"epochs": 1, "optimizer": {"lr": "fast"}}, "train.optimizer.lr: expected a number, got 'fast' (f.yaml)"),
    ({"epochs": 1, "optimizer": {"name": ["a"]}}, "train.optimizer.name: expected a string, got ['a'] (f.yaml)"),
    ({"epochs": 1, "optimizer": {"betas": 0.9}}, "train.optimizer.betas: expected a list, got 0.9 (f.yaml)"),
    ({"epochs": 1, "optimizer": {"betas": [0.9, "x"]}},
     "train.optimizer.betas[1]: expected a number, got 'x' (f.yaml)"),
    ({"epochs": 1, "optimizer": 3}, "train.optimizer: expected a mapping, got 3 (f.yaml)"),
    ({"epochs": None}, "train.epochs: must not be null (f.yaml)"),
])
def test_wrong_types_name_the_key(train, expected):
    assert _msg({"name": "n", "train": train}) == expected


@pytest.mark.parametrize("extra, expected", [
    ({"mode": "up"}, "mode: expected one of 'max', 'min', got 'up' (f.yaml)"),
    ({"shape": [1, 2, 3]}, "shape: expected 2 values, got [1, 2, 3] (f.yaml)"),
    ({"tags": [1]}, "tags: expected a mapping, got [1] (f.yaml)"),
    ({"tags": {"a": "b"}}, "tags.a: expected a number, got 'b' (f.yaml)"),
    ({"items": [{"epochs": 1}, {"epoch": 1}]},
     "unknown key items[1].epoch (f.yaml); allowed under items[1]: epochs, optimizer, warmup, amp"),
    ({"train": None}, "train: must not be null (f.yaml)"),
])
def test_literal_tuple_dict_and_lists_of_dataclasses(extra, expected):
    assert _msg({"name": "n", "train": {"epochs": 1}, **extra}) == expected


def test_the_error_class_is_the_callers_and_carries_key_reason_and_source():
    with pytest.raises(MyError) as e:
        build_dataclass(Top, {"name": "n", "train": {"epochs": "2"}}, source="r.yaml", error=MyError)
    assert str(e.value) == "train.epochs: expected an integer, got '2' (r.yaml)"
    assert (e.value.key, e.value.reason, e.value.source) == ("train.epochs", "expected an integer, got '2'", "r.yaml")
    with pytest.raises(MyError, match=r"^unknown key x \(r.yaml\)") as e:
        build_dataclass(Optim, {"x": 1}, source="r.yaml", error=MyError)
    assert e.value.key == "x" and e.value.reason == "unknown key (allowed under the top level: name, lr, betas)"
    exc = invalid("a.b", "must be > 0", source="s", error=MyError)
    assert isinstance(exc, MyError) and str(exc) == "a.b: must be > 0 (s)" and exc.key == "a.b"


@dataclass(frozen=True)
class Ref:
    """A ``{table, row}`` mapping."""

    table: str
    row: str


def test_coerce_one_value():
    assert coerce(list[float], [1, "2e-3"], key="k", source="s") == [1.0, 0.002]
    assert coerce(Any, None, key="k", source="s") is None and coerce(dict[str, Any], {"a": None}, key="k",
                                                                      source="s") == {"a": None}
    assert coerce(str | Ref, {"table": 1, "row": "r"}, key="k", source="s") == Ref("1", "r")
    assert coerce(str | Ref, "r", key="k", source="s") == "r"
    with pytest.raises(SchemaError, match=r"^k: expected a string or a mapping of table, row, got \[1\] \(s\)$"):
        coerce(str | Ref | None, [1], key="k", source="s")
    assert coerce(int | None, None, key="k", source="s") is None
    assert coerce(int | str, "x", key="k", source="s") == "x"
    with pytest.raises(MyError, match=r"^k\[0\]: expected an integer, got 'a' \(s\)$"):
        coerce(list[int], ["a"], key="k", source="s", error=MyError)
    with pytest.raises(SchemaError, match=r"^k: expected an integer or true/false, got 'a' \(s\)$"):
        coerce(int | bool, "a", key="k", source="s")


def test_check_keys_checks_names_only_in_data_order():
    check_keys(Top, {"train": {"optimizer": {"lr": "not checked"}}}, source="layer")  # no missing-key error
    with pytest.raises(MyError) as e:
        check_keys(Top, {"train": {"zz": 1, "aa": 2}}, source="layer", prefix="p.", error=MyError)
    assert str(e.value) == ("unknown key p.train.zz (layer); allowed under p.train: epochs, optimizer, warmup, amp")


def test_collecting_problems_lists_every_one():
    problems: list[Exception] = []
    out = build_dataclass(Top, {"name": "n", "train": {"epochs": 1, "amp": 1}, "mode": "up", "x": 1, "y": 2},
                          source="f.yaml", problems=problems, error=MyError)
    assert [str(p) for p in problems] == [
        "unknown key x (f.yaml); allowed under the top level: name, train, mode, extra, tags, shape, sources, items, "
        "anything",
        "unknown key y (f.yaml); allowed under the top level: name, train, mode, extra, tags, shape, sources, items, "
        "anything",
        "train.amp: expected true/false, got 1 (f.yaml)",
        "mode: expected one of 'max', 'min', got 'up' (f.yaml)",
    ]
    assert all(isinstance(p, MyError) for p in problems)
    assert out == Top(name="n", train=Train(epochs=1))  # bad values keep their defaults
    problems.clear()
    out = build_dataclass(Top, {"name": "n", "train": {"epochs": 1}, "items": [{"epochs": 1}, {"epochs": "x"}],
                                "tags": {"a": 1, "b": "x"}}, source="f.yaml", problems=problems)
    assert (out.items, out.tags) == ([Train(epochs=1)], {"a": 1.0})  # the bad items are dropped
    assert [str(p) for p in problems] == ["tags.b: expected a number, got 'x' (f.yaml)",
                                          "items[1].epochs: expected an integer, got 'x' (f.yaml)"]
    problems.clear()
    assert build_dataclass(Top, {"train": {"epochs": "x"}}, source="f.yaml", problems=problems) is None
    assert [p.key for p in problems] == ["name", "train.epochs"]  # in field order


@dataclass(frozen=True)
class Row:
    """A record whose ``row`` field is the YAML key ``id`` and whose ``paper`` the caller sets."""

    paper: str
    row: str = field(metadata={KEY: "id"})
    note: str | None = None


def test_key_alias_and_caller_values():
    assert build_dataclass(Row, {"id": "r1"}, source="s", values={"paper": "p"}) == Row("p", "r1")
    assert _msg({"id": "r1", "paper": "q"}, Row, values={"paper": "p"}) == (
        "unknown key paper (f.yaml); allowed under the top level: id, note")
    assert _msg({}, Row, values={"paper": "p"}) == "missing key id (f.yaml)"
    check_keys(Row, {"note": "n"}, source="s", exclude=["paper"])
    with pytest.raises(SchemaError, match=r"^unknown key d.paper \(s\); allowed under d: id, note$"):
        check_keys(Row, {"paper": "q"}, source="s", prefix="d.", exclude=["paper"])


@dataclass
class Pose:
    """Task options of one task."""

    sigma: float = 2.0


@dataclass
class Seg:
    """Task options of another task."""

    classes: int = 19


@dataclass
class Job:
    """A section whose dataclass depends on another key."""

    task: str
    options: Any = None


def _by_task(cls: type, name: str, data: Mapping[str, Any]) -> type | None:
    if cls is Job and name == "options":
        return {"pose": Pose, "seg": Seg}[data["task"]]
    return None


def test_resolve_type_picks_a_fields_dataclass_per_instance():
    assert build_dataclass(Job, {"task": "pose", "options": {"sigma": 3}}, source="s", resolve_type=_by_task) == \
        Job("pose", Pose(3.0))
    assert build_dataclass(Job, {"task": "seg", "options": {}}, source="s", resolve_type=_by_task) == Job("seg", Seg())
    with pytest.raises(SchemaError, match=r"^unknown key options.sigma \(s\); allowed under options: classes$"):
        build_dataclass(Job, {"task": "seg", "options": {"sigma": 3}}, source="s", resolve_type=_by_task)
    with pytest.raises(SchemaError, match=r"^unknown key options.sigma \(s\); allowed under options: classes$"):
        check_keys(Job, {"task": "seg", "options": {"sigma": 3}}, source="s", resolve_type=_by_task)


def test_not_a_mapping():
    assert _msg([1, 2], Optim, prefix="train.optimizer.") == "train.optimizer: expected a mapping, got [1, 2] (f.yaml)"
