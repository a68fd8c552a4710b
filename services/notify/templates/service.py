"""The brand's template library, read from WeChat at start: which templates exist and their fields.

Rules name a template by its title (ids differ per account and environment); the library turns
the title into each app's template id and the field keys its content declares (``{{thing3.DATA}}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import ServiceUnavailable
from shared.wechat.apps import AppKind, WeChatApps
from shared.wechat.client import WeChatClient

_KEY = re.compile(r"\{\{\s*([A-Za-z_]+[0-9]*)\.DATA\s*\}\}")

OA_TEMPLATE_LIST = "/cgi-bin/template/get_all_private_template"
SUBSCRIBE_TEMPLATE_LIST = "/wxaapi/newtmpl/gettemplate"


class Channel(StrEnum):
    OA_TEMPLATE = "oa_template"
    MP_SUBSCRIBE = "mp_subscribe"
    OA_SUBSCRIBE_NOTICE = "oa_subscribe_notice"
    CUSTOMER_SERVICE = "customer_service"


@dataclass(frozen=True)
class Template:
    appid: str
    template_id: str
    title: str
    channel: Channel
    keys: tuple[str, ...]
    long_term: bool = False


@dataclass(frozen=True)
class TemplateLibrary:
    templates: tuple[Template, ...]

    def find(self, channel: Channel, title: str) -> Template | None:
        return next((t for t in self.templates if t.channel is channel and t.title == title), None)

    def by_id(self, appid: str, template_id: str) -> Template | None:
        return next((t for t in self.templates if t.appid == appid and t.template_id == template_id), None)


def keys_of(content: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_KEY.findall(content or "")))


async def load_library(wechat: WeChatClient, apps: WeChatApps) -> TemplateLibrary:
    """Every template of the brand's service account and mini-program (read-only WeChat calls)."""
    found: list[Template] = []
    for app in apps.apps:
        if app.kind is AppKind.OFFICIAL_ACCOUNT:
            body = await wechat.call(app.appid, "GET", OA_TEMPLATE_LIST)
            for t in body.get("template_list") or []:
                found.append(
                    Template(
                        app.appid,
                        str(t["template_id"]),
                        str(t.get("title", "")),
                        Channel.OA_TEMPLATE,
                        keys_of(str(t.get("content", ""))),
                    )
                )
            found += _subscribe_templates(
                app.appid, await wechat.call(app.appid, "GET", SUBSCRIBE_TEMPLATE_LIST), Channel.OA_SUBSCRIBE_NOTICE
            )
        elif app.kind is AppKind.MINI_PROGRAM:
            found += _subscribe_templates(
                app.appid, await wechat.call(app.appid, "GET", SUBSCRIBE_TEMPLATE_LIST), Channel.MP_SUBSCRIBE
            )
    return TemplateLibrary(tuple(found))


def _subscribe_templates(appid: str, body: dict[str, object], channel: Channel) -> list[Template]:
    out = []
    items = body.get("data") or []
    assert isinstance(items, list)
    for t in items:
        # newtmpl "type": 2 one-time, 3 long-term.
        out.append(
            Template(
                appid,
                str(t["priTmplId"]),
                str(t.get("title", "")),
                channel,
                keys_of(str(t.get("content", ""))),
                long_term=int(t.get("type") or 2) == 3,
            )
        )
    return out


class TemplatesUnavailable(ServiceUnavailable):
    """The template library is not loaded (WeChat unreachable since start) or does not fit the rules.

    Transient by its class: a consumer holds the event and pauses until the library is in.
    """

    type_slug = "templates-unavailable"
    title = "WeChat's template library is not loaded"


class TemplateSlot:
    """The library notify sends with: loaded at start when WeChat answers, else by a background job.

    Until it is in (and checked against the rules), ``get`` raises :class:`TemplatesUnavailable`, so
    events wait in the queue instead of being decided without knowing which templates exist, and
    ``/ready`` says why.
    """

    def __init__(self) -> None:
        self._library: TemplateLibrary | None = None
        self.problem: str | None = "not loaded yet"

    def get(self) -> TemplateLibrary:
        if self._library is None:
            raise TemplatesUnavailable(f"WeChat's template library: {self.problem}")
        return self._library

    def set(self, library: TemplateLibrary) -> None:
        self._library, self.problem = library, None

    def refuse(self, problem: str) -> None:
        """Keep the library out (e.g. it does not fit the rules) and say why."""
        self._library, self.problem = None, problem

    @property
    def loaded(self) -> bool:
        return self._library is not None
