"""Requests for the WeChat mirror, and the menu plan."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.identity.members.schemas import APPID, Body


class ConditionalMenuPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(max_length=32)
    button: list[dict[str, Any]] = Field(min_length=1, max_length=3)


class MenuPlan(BaseModel):
    """A default menu and conditional menus by tag, published in order (the last one wins first)."""

    model_config = ConfigDict(extra="forbid")

    default: list[dict[str, Any]] = Field(min_length=1, max_length=3)
    conditional: list[ConditionalMenuPlan] = Field(default_factory=list, max_length=20)

    @classmethod
    def standard(cls, mp_appid: str | None) -> MenuPlan:
        """新人福利 for new members, 会员专享 for buyers, 积分兑换 for frequent buyers."""

        def page(name: str, path: str) -> dict[str, Any]:
            if mp_appid is None:
                return {"type": "click", "name": name, "key": f"menu:{path}"}
            # "url" is where old clients without mini-program support go.
            return {
                "type": "miniprogram",
                "name": name,
                "url": "https://mp.weixin.qq.com",
                "appid": mp_appid,
                "pagepath": path,
            }

        member = page("会员中心", "pages/member/index")
        shop = page("逛商城", "pages/shop/index")
        points = {"type": "click", "name": "查积分", "key": "points:balance"}
        return cls(
            default=[member, shop, points],
            conditional=[
                ConditionalMenuPlan(tag="new_member", button=[page("新人福利", "pages/welcome/index"), shop, points]),
                ConditionalMenuPlan(tag="buyer", button=[page("会员专享", "pages/member/benefits"), shop, points]),
                ConditionalMenuPlan(tag="frequent_buyer", button=[page("积分兑换", "pages/points/mall"), shop, points]),
            ],
        )


class TagSyncRequest(Body):
    appid: str = Field(pattern=APPID)


class MenuRequest(Body):
    appid: str = Field(pattern=APPID)
    plan: MenuPlan | None = None
