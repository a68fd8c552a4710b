"""The committed event schemas are the contract: the code may only extend them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.contracts import schemas

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts" / "events"


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What a consumer written against ``old`` would trip over in ``new``."""
    problems: list[str] = []
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    for name, spec in old_props.items():
        if name not in new_props:
            problems.append(f"{path}{name}: removed")
        elif spec.get("type") != new_props[name].get("type"):
            problems.append(f"{path}{name}: type {spec.get('type')} -> {new_props[name].get('type')}")
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


@pytest.mark.parametrize("name", sorted(schemas()))
def test_event_schema_is_committed_and_compatible(name: str) -> None:
    committed = CONTRACTS / f"{name}.json"
    assert committed.exists(), f"{name} has no committed schema: run `make contracts` and commit contracts/"
    assert breaking_changes(json.loads(committed.read_text()), schemas()[name]) == []
