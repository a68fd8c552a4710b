"""The service account's passive-reply rule set: what notify owns and publishes, what the gateway
keeps a copy of, and the one matcher both use.

notify loads the rule file (``NOTIFY_REPLY_RULES_FILE``) and publishes it as
``notify.reply_rules.published`` with a content version; every gateway replica keeps the current
set in memory and answers a push from it without asking anyone. A rule whose answer needs data
another service owns (``needs: points``: the member's real balance, which commerce keeps) cannot be
answered from the copy: the gateway asks notify within its reply budget and, when that runs out,
answers the rule's ``pending`` text ("一会儿发给你") and notify sends the real answer as a
customer-service message. A balance is never invented: ``fallback`` is what is said when the data
cannot be had at all.
"""

from __future__ import annotations

import hashlib
import string
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# WeChat truncates or rejects over-long text replies; 600 characters keeps well inside its limit.
MAX_REPLY_CHARS = 600
Trigger = Literal["text", "subscribe", "scan", "click"]
Needs = Literal["points"]
# What a ``needs: points`` reply may name (commerce's balance fields).
PLACEHOLDERS: dict[str, frozenset[str]] = {"points": frozenset({"available", "pending"})}
DEFAULT_PENDING = "正在为你查询，一会儿发给你。"


class _Rules(BaseModel):
    # A tolerant reader, as every event is: a gateway still on this schema ignores a field notify
    # added. notify's file loader validates with ``extra="forbid"``, so a typo in the file is an error.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Answer(_Rules):
    """What a rule answers: a fixed text, or a template over data another service owns."""

    reply: str = Field(min_length=1, max_length=MAX_REPLY_CHARS)
    needs: Needs | None = Field(
        default=None, description="the data the reply is made from; absent for a fixed text"
    )
    pending: str | None = Field(
        default=None,
        max_length=MAX_REPLY_CHARS,
        description="said at once when the data is not there within the reply budget; the real reply follows",
    )
    fallback: str | None = Field(
        default=None,
        max_length=MAX_REPLY_CHARS,
        description="said instead when the data cannot be had (unknown member, owner down); never a made-up value",
    )

    @model_validator(mode="after")
    def _template_fits_its_data(self) -> Answer:
        names = {f for _, f, _, _ in string.Formatter().parse(self.reply) if f is not None}
        allowed = PLACEHOLDERS.get(self.needs or "", frozenset())
        unknown = names - allowed
        if unknown:
            raise ValueError(
                f"reply names {sorted(unknown)}, which "
                + (f"needs: {self.needs} does not provide" if self.needs else "a fixed reply cannot fill")
            )
        return self

    @property
    def is_static(self) -> bool:
        return self.needs is None

    def render(self, data: dict[str, int]) -> str:
        """The reply filled with the data it needs (only the names its ``needs`` allows)."""
        return self.reply.format(**data)[:MAX_REPLY_CHARS]


class KeywordRule(Answer):
    match: list[str] = Field(min_length=1)
    mode: Literal["exact", "contains"] = "contains"

    def matches(self, text: str) -> bool:
        t = text.strip().casefold()
        words = [m.casefold() for m in self.match]
        return t in words if self.mode == "exact" else any(w in t for w in words)


class Welcome(_Rules):
    default: str | None = Field(default=None, max_length=MAX_REPLY_CHARS)
    scenes: dict[str, str] = Field(default_factory=dict)

    @field_validator("scenes")
    @classmethod
    def _bounded(cls, scenes: dict[str, str]) -> dict[str, str]:
        for scene, text in scenes.items():
            if not text or len(text) > MAX_REPLY_CHARS:
                raise ValueError(f"welcome for scene {scene!r} must be 1-{MAX_REPLY_CHARS} characters")
        return scenes


class ReplyAsk(_Rules):
    """What a push asks of the rules: its trigger and the text, scene or menu key it carries."""

    trigger: Trigger
    text: str | None = Field(default=None, max_length=2048)
    scene: str | None = Field(default=None, max_length=128)
    key: str | None = Field(default=None, max_length=128)


class ReplyRuleSet(_Rules):
    keywords: list[KeywordRule] = Field(default_factory=list)
    welcome: Welcome = Field(default_factory=Welcome)
    # A menu key answers a fixed text (the common case) or an Answer with data.
    menu: dict[str, str | Answer] = Field(default_factory=dict)
    pending_default: str = Field(default=DEFAULT_PENDING, min_length=1, max_length=MAX_REPLY_CHARS)

    @field_validator("menu")
    @classmethod
    def _menu_texts(cls, menu: dict[str, str | Answer]) -> dict[str, str | Answer]:
        for key, value in menu.items():
            if isinstance(value, str) and not (1 <= len(value) <= MAX_REPLY_CHARS):
                raise ValueError(f"menu reply for {key!r} must be 1-{MAX_REPLY_CHARS} characters")
        return menu

    @property
    def version(self) -> str:
        """The content's digest: equal sets have equal versions, whichever process computed it."""
        canonical = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:32]

    def answer_for(self, ask: ReplyAsk) -> Answer | None:
        """The rule that answers ``ask``, or None: the push gets ``success``."""
        if ask.trigger == "text" and ask.text:
            return next((r for r in self.keywords if r.matches(ask.text)), None)
        if ask.trigger in ("subscribe", "scan"):
            if ask.scene and ask.scene in self.welcome.scenes:
                return Answer(reply=self.welcome.scenes[ask.scene])
            # A re-scan by a follower without a scene rule gets nothing: they had the welcome.
            if ask.trigger == "subscribe" and self.welcome.default:
                return Answer(reply=self.welcome.default)
            return None
        if ask.trigger == "click" and ask.key:
            found = self.menu.get(ask.key)
            return Answer(reply=found) if isinstance(found, str) else found
        return None

    def pending_text(self, answer: Answer) -> str:
        return answer.pending or self.pending_default
