"""``make contracts``: export every event's JSON Schema (and an AsyncAPI index) to ``contracts/``.

The committed files are the published contract; ``tests/unit/test_contracts.py`` fails when the
code's schemas are not a backward-compatible extension of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from services.manifests import CONSUMERS
from shared.events import DOMAIN_EVENTS, Envelope, WeChatPushReceived

OUT = Path(__file__).resolve().parent.parent / "contracts"


def schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"envelope": Envelope.model_json_schema()}
    for cls in DOMAIN_EVENTS:
        out[cls.event_type] = {**cls.model_json_schema(), "x-schema-version": cls.schema_version}
    out["wechat.push"] = {
        **WeChatPushReceived.model_json_schema(),
        "x-routing-keys": "wechat.<oa|mp|shop>.<lower-cased Event or MsgType>",
        "x-schema-version": WeChatPushReceived.schema_version,
    }
    return out


def asyncapi(all_schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    consumers_of: dict[str, list[str]] = {}
    for consumer, types in CONSUMERS.items():
        for t in types:
            key = "wechat.push" if t.startswith("wechat.") else t
            consumers_of.setdefault(key, []).append(consumer)
    return {
        "asyncapi": "2.6.0",
        "info": {"title": "Siyu events", "version": "1"},
        "defaultContentType": "application/json",
        "channels": {
            name: {
                "description": f"exchange siyu.events, routing key {name}; consumed by "
                + (", ".join(sorted(set(consumers_of.get(name, [])))) or "nobody yet"),
                "subscribe": {"message": {"payload": {"$ref": f"events/{name}.json"}}},
            }
            for name in all_schemas
            if name != "envelope"
        },
    }


def main() -> None:
    all_schemas = schemas()
    (OUT / "events").mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas.items():
        (OUT / "events" / f"{name}.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    (OUT / "asyncapi.yaml").write_text(yaml.safe_dump(asyncapi(all_schemas), sort_keys=False, allow_unicode=True))
    print(
        f"wrote {len(all_schemas)} schemas to {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}"
    )


if __name__ == "__main__":
    main()
