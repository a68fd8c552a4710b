"""The passive-reply rule table: keyword → text, a welcome per follow scene, a menu key → text."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigurationError

# WeChat truncates or rejects over-long text replies; 600 characters keeps well inside its limit.
MAX_REPLY_CHARS = 600


class KeywordRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    match: list[str] = Field(min_length=1)
    mode: Literal["exact", "contains"] = "contains"
    reply: str = Field(min_length=1, max_length=MAX_REPLY_CHARS)

    def matches(self, text: str) -> bool:
        t = text.strip().casefold()
        words = [m.casefold() for m in self.match]
        return t in words if self.mode == "exact" else any(w in t for w in words)


class Welcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str | None = Field(default=None, max_length=MAX_REPLY_CHARS)
    scenes: dict[str, str] = Field(default_factory=dict)


class ReplyRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keywords: list[KeywordRule] = Field(default_factory=list)
    welcome: Welcome = Field(default_factory=Welcome)
    menu: dict[str, str] = Field(default_factory=dict)

    def reply_for(self, trigger: str, *, text: str | None, scene: str | None, key: str | None) -> str | None:
        if trigger == "text" and text:
            return next((r.reply for r in self.keywords if r.matches(text)), None)
        if trigger in ("subscribe", "scan"):
            if scene and scene in self.welcome.scenes:
                return self.welcome.scenes[scene]
            # A re-scan by a follower without a scene rule gets nothing: they already had the welcome.
            return self.welcome.default if trigger == "subscribe" else None
        if trigger == "click" and key:
            return self.menu.get(key)
        return None


def load_rules(path: str | Path) -> ReplyRules:
    p = Path(path)
    try:
        return ReplyRules.model_validate(yaml.safe_load(p.read_text(encoding="utf-8")) or {})
    except FileNotFoundError:
        raise ConfigurationError(f"NOTIFY_REPLY_RULES_FILE: {p} does not exist") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"NOTIFY_REPLY_RULES_FILE: {p} is invalid: {exc}") from None
