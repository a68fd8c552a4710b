"""Message rules: how a domain event becomes a message (notify owns the file, NOTIFY_MESSAGE_RULES_FILE).

A rule names the event, a filter on its fields, who the member is, the template (by title), the
channels to try in order, a typed mapping from the event's fields to the template's fields, and
the mini-program page to open. Values are shaped to WeChat's per-type rules (research/wechat.md
§5, shop.md §4.3): ``thing`` ≤ 20 characters, ``character_string`` ≤ 32 ASCII, ``amount`` from fen,
``time``/``date`` in Beijing time, ``phrase`` ≤ 5 CJK characters...
The file is checked at start against the template library: a rule naming a template or a field
that does not exist stops the start, not the first send.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.notify.limits.service import beijing
from services.notify.templates.service import Channel, TemplateLibrary
from shared.errors import ConfigurationError

_MAX = {
    "thing": 20,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "phone_number": 17,
    "car_number": 8,
    "name": 10,
    "phrase": 5,
}
_TYPE = re.compile(r"^([a-z_]+?)([0-9]+)$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str | None = Field(default=None, alias="from", pattern=r"^[a-z_]+$")
    value: str | None = Field(default=None, max_length=64)
    map: dict[str, str] = Field(default_factory=dict)
    default: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        if (self.source is None) == (self.value is None):
            raise ValueError("a field takes exactly one of `from` (an event field) or `value` (a constant)")
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    event: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){2,}$")
    kind: Literal["transactional", "marketing"] = "transactional"
    member: str = Field(default="member_id", pattern=r"^[a-z_]+$")
    when: dict[str, str | int | bool | None] = Field(default_factory=dict)
    key: str = Field(default="{event_id}", min_length=1, max_length=100)
    template: str = Field(min_length=1, max_length=64)
    channels: list[Channel] = Field(min_length=1)
    fields: dict[str, FieldSpec] = Field(min_length=1)
    page: str = Field(min_length=1, max_length=200)
    text: str | None = Field(default=None, max_length=600)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("a channel is listed twice")
        if Channel.CUSTOMER_SERVICE in self.channels and not self.text:
            raise ValueError("customer_service needs `text`")
        for key in self.fields:
            m = _TYPE.match(key)
            if not m:
                raise ValueError(f"field {key!r} is not a typed WeChat key (thing1, amount2, ...)")
        return self

    def matches(self, values: dict[str, Any]) -> bool:
        return all(values.get(k) == v for k, v in self.when.items())


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(default_factory=list)
    campaign: Rule
    abandoned_order: Rule

    @model_validator(mode="after")
    def _unique(self) -> RulesFile:
        names = [r.name for r in self.all()]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        if any(r.event is None for r in self.rules):
            raise ValueError("every rule under `rules` names its `event`")
        return self

    def all(self) -> list[Rule]:
        return [*self.rules, self.campaign, self.abandoned_order]

    def for_event(self, event_type: str) -> list[Rule]:
        return [r for r in self.rules if r.event == event_type]

    def event_types(self) -> list[str]:
        return sorted({r.event for r in self.rules if r.event})


def load_rules(path: str | Path) -> RulesFile:
    p = Path(path)
    try:
        return RulesFile.model_validate(yaml.safe_load(p.read_text(encoding="utf-8")) or {})
    except FileNotFoundError:
        raise ConfigurationError(f"NOTIFY_MESSAGE_RULES_FILE: {p} does not exist") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"NOTIFY_MESSAGE_RULES_FILE: {p} is invalid: {exc}") from None


def check_rules(rules: RulesFile, library: TemplateLibrary) -> None:
    """Every rule's template exists for each of its channels and its fields are exactly the template's."""
    problems = []
    for rule in rules.all():
        for channel in rule.channels:
            if channel is Channel.CUSTOMER_SERVICE:
                continue
            template = library.find(channel, rule.template)
            if template is None:
                problems.append(f"rule {rule.name}: no {channel.value} template titled {rule.template!r}")
                continue
            missing = set(template.keys) - set(rule.fields)
            unknown = set(rule.fields) - set(template.keys)
            if missing or unknown:
                problems.append(
                    f"rule {rule.name}: {channel.value} template {rule.template!r} fields differ "
                    f"(unmapped: {sorted(missing)}, not in the template: {sorted(unknown)})"
                )
    if problems:
        raise ConfigurationError("NOTIFY_MESSAGE_RULES_FILE does not fit the template library: " + "; ".join(problems))


class RenderError(ValueError):
    """An event's values cannot fill the rule's template (a field is missing or empty)."""


@dataclass(frozen=True)
class Rendered:
    data: dict[str, dict[str, str]]
    page: str
    text: str | None
    key: str


def render(rule: Rule, values: dict[str, Any]) -> Rendered:
    data = {key: {"value": _value(key, spec, values)} for key, spec in rule.fields.items()}
    return Rendered(
        data, _fill(rule.page, values), _fill(rule.text, values) if rule.text else None, _fill(rule.key, values)
    )


def _value(key: str, spec: FieldSpec, values: dict[str, Any]) -> str:
    shaped = _shape(key, _raw(key, spec, values))
    if not shaped and spec.default:
        shaped = _shape(key, spec.default)  # e.g. a carrier's name in Latin letters for a CJK phrase
    if not shaped:
        raise RenderError(f"{key}: the value leaves nothing WeChat accepts for its type")
    return shaped


def _raw(key: str, spec: FieldSpec, values: dict[str, Any]) -> Any:
    raw: Any = spec.value if spec.source is None else values.get(spec.source)
    if spec.map:
        raw = spec.map.get(str(raw), spec.default)
    if raw is None or raw == "":
        raw = spec.default
    if raw is None or raw == "":
        raise RenderError(f"{key}: no value for {spec.source!r}")
    return raw


def _fill(text: str, values: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        v = values.get(m[1])
        if v is None:
            raise RenderError(f"no value for {{{m[1]}}}")
        return str(v)

    return _PLACEHOLDER.sub(one, text)


def _cjk(c: str) -> bool:
    return "CJK" in unicodedata.name(c, "")


def _clean(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c)[0] != "C").strip()


def _shape(key: str, raw: Any) -> str:
    """A value WeChat accepts for a field of ``key``'s type."""
    m = _TYPE.match(key)
    kind = m[1] if m else "thing"
    if kind == "amount":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return f"¥{raw // 100}.{raw % 100:02d}"
        return _clean(str(raw))[:13]
    if kind in ("time", "date"):
        if isinstance(raw, str):
            try:
                raw = datetime.fromisoformat(raw)
            except ValueError:
                return _clean(raw)[:41]
        if isinstance(raw, datetime):
            local = beijing(raw)
            return local.strftime("%Y年%m月%d日 %H:%M") if kind == "time" else local.strftime("%Y年%m月%d日")
        return _clean(str(raw))[:41]
    text = _clean(str(raw))
    if kind == "number":
        digits = re.sub(r"[^0-9.]", "", text)
        return digits[:32] or "0"
    if kind in ("character_string", "letter"):
        text = "".join(c for c in text if c.isascii() and c.isprintable() and c != " ")
        return text[:32]
    limit = _MAX.get(kind, 20)
    if kind == "phrase":
        text = "".join(c for c in text if _cjk(c))
    if kind == "name" and not any(_cjk(c) for c in text):
        limit = 20
    if len(text) > limit:
        # WeChat's own SDKs shorten this way (WxJava resetValue: 17 + "…" for thing).
        return text[: limit - 3] + "…" if limit > 5 else text[:limit]
    return text
