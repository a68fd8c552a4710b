"""WeChat's error answers: HTTP 200 with ``{"errcode", "errmsg"}``.

Each errmsg is the one WeChat sends with that errcode, as recorded in the official docs' error tables
and the global return-code list (mirrored by WxJava's ``WxMpErrorMsgEnum``); README.md lists the
source of every code the sandbox answers.
"""

from __future__ import annotations

from typing import Any

# The errmsg WeChat sends with each errcode the sandbox can answer.
ERRMSGS: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40007: "invalid media_id",
    40008: "invalid message type",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40020: "invalid button url size",
    40023: "invalid sub button size",
    40024: "invalid sub button type",
    40025: "invalid sub button name size",
    40026: "invalid sub button key size",
    40027: "invalid sub button url size",
    40029: "invalid code",
    40032: "invalid openid list size",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    40165: "invalid weapp pagepath",
    40166: "invalid weapp appid",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    44002: "empty post data",
    44003: "empty news data",
    44004: "empty content",
    45008: "article size out of limit",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    45056: "too many tag now, no need to add new",
    45058: "can't modify sys tag",
    45059: "can not tagging one user too much",
    45157: "invalid tag name",
    45158: "tag name too long",
    45159: "invalid tag id",
    46003: "menu no exist",
    47001: "data format error",
    47003: "argument invalid!",
    48001: "api unauthorized",
    49003: "not match openid with appid",
    65301: "this menu is not conditionalmenu",
    65302: "no such user",
    65303: "there is no selfmenu, please create selfmenu first",
    65304: "match rule empty",
    65320: "match rule contains privacy information",
}


class WeChatApiError(Exception):
    """An answer WeChat gives as HTTP 200 with ``{"errcode", "errmsg"}``."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSGS.get(errcode, "sandbox error")
        super().__init__(f"{self.errcode} {self.errmsg}")

    def body(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "errmsg": self.errmsg}
