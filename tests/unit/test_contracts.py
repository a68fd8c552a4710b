"""The committed event schemas are the contract: the code may only extend them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.contracts import schemas

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts" / "events"


def type_of(spec: dict[str, Any]) -> Any:
    """A comparable type signature: ``type``, or the sorted types of an ``anyOf`` (optional fields)."""
    if "anyOf" in spec:
        return sorted(str(type_of(s)) for s in spec["anyOf"])
    return spec.get("type", spec.get("$ref"))


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What a consumer written against ``old`` would trip over in ``new`` (recursing into objects)."""
    problems: list[str] = []
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    for name, spec in old_props.items():
        if name not in new_props:
            problems.append(f"{path}{name}: removed")
        elif type_of(spec) != type_of(new_props[name]):
            problems.append(f"{path}{name}: type {type_of(spec)} -> {type_of(new_props[name])}")
        elif "properties" in spec:
            problems.extend(breaking_changes(spec, new_props[name], f"{path}{name}."))
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    problems.extend(f"{path}{name}: newly required" for name in sorted(added_required))
    return problems


def test_breaking_change_detector_catches_removal_and_new_required() -> None:
    old = {"properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert breaking_changes(old, {"properties": {}, "required": []}) == ["a: removed"]
    assert breaking_changes(old, {"properties": {"a": {"type": "string"}, "b": {}}, "required": ["a", "b"]}) == [
        "b: newly required"
    ]
    assert breaking_changes(old, {"properties": {"a": {"type": "integer"}}, "required": ["a"]}) == [
        "a: type string -> integer"
    ]


def test_breaking_change_detector_sees_optional_and_nested_fields() -> None:
    optional = {"properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    changed = {"properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}
    assert breaking_changes(optional, changed) == ["a: type ['null', 'string'] -> ['integer', 'null']"]
    nested_old = {"properties": {"o": {"type": "object", "properties": {"x": {"type": "string"}}}}}
    nested_new = {"properties": {"o": {"type": "object", "properties": {}}}}
    assert breaking_changes(nested_old, nested_new) == ["o.x: removed"]


@pytest.mark.parametrize("name", sorted(schemas()))
def test_event_schema_is_committed_and_compatible(name: str) -> None:
    committed = CONTRACTS / f"{name}.json"
    assert committed.exists(), f"{name} has no committed schema: run `make contracts` and commit contracts/"
    assert breaking_changes(json.loads(committed.read_text()), schemas()[name]) == []
