"""The brand's WeChat apps, read from ``SIYU_WECHAT_APPS_FILE`` (YAML, see contracts.md)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import ConfigurationError

# What an appid and an openid look like; every route that takes one from outside checks it.
APPID_PATTERN = r"^wx[0-9A-Za-z]{14,30}$"
OPENID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class AppKind(StrEnum):
    OFFICIAL_ACCOUNT = "official_account"
    MINI_PROGRAM = "mini_program"
    SHOP = "shop"

    @property
    def event_prefix(self) -> str:
        """The ``<kind>`` of ``wechat.<kind>.<name>`` event types."""
        return {"official_account": "oa", "mini_program": "mp", "shop": "shop"}[self.value]


class WeChatApp(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: AppKind
    appid: str = Field(pattern=APPID_PATTERN)
    secret: str = Field(min_length=1, repr=False)
    original_id: str | None = None
    token: str = Field(min_length=3, max_length=32, repr=False)
    encoding_aes_key: str | None = Field(default=None, repr=False)
    previous_encoding_aes_key: str | None = Field(default=None, repr=False)
    # Mini-programs can be configured to push JSON instead of XML.
    push_format: str = Field(default="xml", pattern="^(xml|json)$")

    @field_validator("encoding_aes_key", "previous_encoding_aes_key")
    @classmethod
    def _key_is_43_chars(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 43:
            raise ValueError("an EncodingAESKey is exactly 43 characters")
        return v

    @model_validator(mode="after")
    def _shop_is_safe_json(self) -> WeChatApp:
        if self.kind is AppKind.SHOP:
            if not self.encoding_aes_key:
                raise ValueError("a shop app needs encoding_aes_key: WeChat Shop pushes only in safe mode")
            if self.push_format != "json":
                object.__setattr__(self, "push_format", "json")
        return self


class WeChatApps(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    apps: list[WeChatApp]

    @model_validator(mode="after")
    def _unique_appids(self) -> WeChatApps:
        seen: set[str] = set()
        for app in self.apps:
            if app.appid in seen:
                raise ValueError(f"appid {app.appid} is listed twice")
            seen.add(app.appid)
        return self

    def get(self, appid: str) -> WeChatApp | None:
        for app in self.apps:
            if app.appid == appid:
                return app
        return None

    def of_kind(self, kind: AppKind) -> list[WeChatApp]:
        return [a for a in self.apps if a.kind is kind]

    def first(self, kind: AppKind) -> WeChatApp:
        found = self.of_kind(kind)
        if not found:
            raise ConfigurationError(f"the WeChat apps file has no app of kind {kind.value}")
        return found[0]


def load_apps(path: str | Path) -> WeChatApps:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"SIYU_WECHAT_APPS_FILE: {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"SIYU_WECHAT_APPS_FILE: {p} is not valid YAML ({exc})") from None
    try:
        return WeChatApps.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigurationError(f"SIYU_WECHAT_APPS_FILE: {p}: {where}: {err['msg']}") from None
