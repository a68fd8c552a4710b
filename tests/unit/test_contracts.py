"""The committed event schemas (``contracts/``) are the contract: the code must match them exactly.

The schemas the code exports now are compared with the committed files, which are only read: a
difference fails with the event and the field. An intended, compatible change is published with
``make contracts`` (then commit ``contracts/``); a breaking one is called out as such first.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.contracts import asyncapi, schemas

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
EVENTS = CONTRACTS / "events"
UPDATE = "if the change is intended, run `make contracts` and commit contracts/"


def _exported() -> dict[str, dict[str, Any]]:
    """What ``make contracts`` would write, as JSON would read it back (tuples become lists, ...)."""
    return {name: json.loads(json.dumps(schema)) for name, schema in schemas().items()}


def _committed(name: str) -> dict[str, Any] | None:
    path = EVENTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------------------------
# how two schemas differ


def _resolve(spec: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in spec and spec["$ref"].startswith("#/$defs/"):
        spec = root.get("$defs", {}).get(spec["$ref"].removeprefix("#/$defs/"), {})
    return spec


def type_of(spec: dict[str, Any]) -> Any:
    """A comparable type signature: ``type``, or the sorted types of an ``anyOf`` (optional fields)."""
    if "anyOf" in spec:
        return sorted(str(type_of(s)) for s in spec["anyOf"])
    return spec.get("type", spec.get("$ref"))


def breaking_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    path: str = "",
    old_root: dict[str, Any] | None = None,
    new_root: dict[str, Any] | None = None,
) -> list[str]:
    """What a consumer written against ``old`` would trip over in ``new`` (into objects, ``$ref``s, arrays)."""
    old_root, new_root = old_root or old, new_root or new
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    problems: list[str] = []
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    for name, spec in old_props.items():
        if name not in new_props:
            problems.append(f"{path}{name}: removed")
            continue
        old_spec, new_spec = _resolve(spec, old_root), _resolve(new_props[name], new_root)
        if type_of(old_spec) != type_of(new_spec):
            problems.append(f"{path}{name}: type {type_of(old_spec)} -> {type_of(new_spec)}")
        elif "properties" in old_spec:
            problems.extend(breaking_changes(old_spec, new_spec, f"{path}{name}.", old_root, new_root))
        elif isinstance(old_spec.get("items"), dict) and isinstance(new_spec.get("items"), dict):
            problems.extend(
                breaking_changes(old_spec["items"], new_spec["items"], f"{path}{name}[].", old_root, new_root)
            )
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    problems.extend(f"{path}{name}: newly required" for name in sorted(added_required))
    return problems


def differences(committed: Any, exported: Any, path: str = "") -> list[str]:
    """Every place where the exported schema is not the committed one, as ``<path>: <what>``."""
    where = path or "(the whole schema)"
    if isinstance(committed, dict) and isinstance(exported, dict):
        out: list[str] = []
        for key in sorted(committed.keys() | exported.keys()):
            sub = f"{path}.{key}" if path else key
            if key not in exported:
                out.append(f"{sub}: committed, no longer in the code")
            elif key not in committed:
                out.append(f"{sub}: in the code, not committed ({json.dumps(exported[key], ensure_ascii=False)[:80]})")
            else:
                out.extend(differences(committed[key], exported[key], sub))
        return out
    if isinstance(committed, list) and isinstance(exported, list) and len(committed) == len(exported):
        return [
            d
            for i, (c, e) in enumerate(zip(committed, exported, strict=True))
            for d in differences(c, e, f"{path}[{i}]")
        ]
    if committed != exported or type(committed) is not type(exported):
        return [
            f"{where}: committed {json.dumps(committed, ensure_ascii=False)[:80]}, code {json.dumps(exported, ensure_ascii=False)[:80]}"
        ]
    return []


def contract_problems(name: str, committed: dict[str, Any] | None, exported: dict[str, Any] | None) -> str | None:
    """Why event ``name``'s exported schema does not match its committed one, or None when it does."""
    if committed is None:
        return f"{name}: the code exports it but contracts/events/{name}.json is not committed; {UPDATE}"
    if exported is None:
        return (
            f"{name}: contracts/events/{name}.json is committed but the code no longer exports the event "
            "(removing or renaming an event breaks its consumers)"
        )
    breaking = breaking_changes(committed, exported)
    if breaking:
        return f"{name}: BREAKING change against the committed contract: " + "; ".join(breaking)
    diffs = differences(committed, exported)
    if diffs:
        return f"{name}: the code's schema differs from contracts/events/{name}.json ({UPDATE}): " + "; ".join(diffs)
    return None


# --------------------------------------------------------------------------------------------
# the contract itself


def _all_event_names() -> list[str]:
    return sorted(set(schemas()) | {p.stem for p in EVENTS.glob("*.json")})


@pytest.mark.parametrize("name", _all_event_names())
def test_event_schema_matches_the_committed_contract(name: str) -> None:
    problem = contract_problems(name, _committed(name), _exported().get(name))
    assert problem is None, problem


def test_asyncapi_index_matches_the_committed_one() -> None:
    committed = yaml.safe_load((CONTRACTS / "asyncapi.yaml").read_text())
    exported = json.loads(json.dumps(asyncapi(schemas())))
    diffs = differences(committed, exported)
    assert not diffs, f"contracts/asyncapi.yaml differs from the code ({UPDATE}): " + "; ".join(diffs)


def test_checking_the_contract_writes_nothing() -> None:
    before = {p: p.read_bytes() for p in CONTRACTS.rglob("*") if p.is_file()}
    for name in _all_event_names():
        contract_problems(name, _committed(name), _exported().get(name))
    assert {p: p.read_bytes() for p in CONTRACTS.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------------------------
# the check can fail: mutated copies of a real committed schema


REAL = "identity.member.registered"


@pytest.fixture
def committed_copy() -> dict[str, Any]:
    schema = _committed(REAL)
    assert schema is not None and "member_id" in schema["properties"] and "scene" in schema["properties"]
    return copy.deepcopy(schema)


def test_the_unchanged_schema_passes(committed_copy: dict[str, Any]) -> None:
    assert contract_problems(REAL, committed_copy, copy.deepcopy(committed_copy)) is None


def test_a_removed_field_is_a_breaking_change_naming_event_and_field(committed_copy: dict[str, Any]) -> None:
    code = copy.deepcopy(committed_copy)
    del code["properties"]["member_id"]
    code["required"].remove("member_id")
    problem = contract_problems(REAL, committed_copy, code)
    assert problem is not None and problem.startswith(f"{REAL}: BREAKING") and "member_id: removed" in problem


def test_a_changed_type_and_a_new_required_field_are_breaking(committed_copy: dict[str, Any]) -> None:
    code = copy.deepcopy(committed_copy)
    code["properties"]["member_id"]["type"] = "integer"
    code["properties"]["store"] = {"type": "string"}
    code["required"].append("store")
    problem = contract_problems(REAL, committed_copy, code)
    assert problem is not None
    assert "member_id: type string -> integer" in problem and "store: newly required" in problem


def test_a_compatible_addition_still_fails_until_committed(committed_copy: dict[str, Any]) -> None:
    code = copy.deepcopy(committed_copy)
    code["properties"]["store"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    problem = contract_problems(REAL, committed_copy, code)
    assert problem is not None and "BREAKING" not in problem
    assert "properties.store: in the code, not committed" in problem and "make contracts" in problem


def test_a_changed_description_or_version_is_a_difference(committed_copy: dict[str, Any]) -> None:
    code = copy.deepcopy(committed_copy)
    code["properties"]["scene"]["description"] = "something else"
    code["x-schema-version"] = 2
    problem = contract_problems(REAL, committed_copy, code)
    assert problem is not None
    assert "properties.scene.description: committed" in problem and "x-schema-version: committed 1, code 2" in problem


def test_an_event_missing_on_either_side_fails() -> None:
    schema = _committed(REAL)
    assert "is not committed" in (contract_problems("shop.thing.new", None, schema) or "")
    assert "no longer exports" in (contract_problems(REAL, schema, None) or "")


def test_breaking_change_detector_catches_removal_and_new_required() -> None:
    old = {"properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert breaking_changes(old, {"properties": {}, "required": []}) == ["a: removed"]
    assert breaking_changes(old, {"properties": {"a": {"type": "string"}, "b": {}}, "required": ["a", "b"]}) == [
        "b: newly required"
    ]
    assert breaking_changes(old, {"properties": {"a": {"type": "integer"}}, "required": ["a"]}) == [
        "a: type string -> integer"
    ]


def test_breaking_change_detector_sees_optional_nested_referenced_and_array_fields() -> None:
    optional = {"properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    changed = {"properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}
    assert breaking_changes(optional, changed) == ["a: type ['null', 'string'] -> ['integer', 'null']"]
    nested_old = {"properties": {"o": {"type": "object", "properties": {"x": {"type": "string"}}}}}
    nested_new = {"properties": {"o": {"type": "object", "properties": {}}}}
    assert breaking_changes(nested_old, nested_new) == ["o.x: removed"]
    ref_old = {
        "$defs": {"Line": {"properties": {"sku": {"type": "string"}}}},
        "properties": {"l": {"$ref": "#/$defs/Line"}},
    }
    ref_new = copy.deepcopy(ref_old)
    ref_new["$defs"]["Line"]["properties"]["sku"]["type"] = "integer"
    assert breaking_changes(ref_old, ref_new) == ["l.sku: type string -> integer"]
    items_old = {"properties": {"ls": {"type": "array", "items": {"$ref": "#/$defs/Line"}}}, "$defs": ref_old["$defs"]}
    items_new = {"properties": {"ls": {"type": "array", "items": {"$ref": "#/$defs/Line"}}}, "$defs": {"Line": {}}}
    assert breaking_changes(items_old, items_new) == ["ls[].sku: removed"]
