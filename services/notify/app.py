"""notify: decides whether, when and how to reach a member — rules turning domain events into
messages, channel choice through the member's follow state, authorisations and service windows,
marketing caps and quiet hours, WeChat's rates and quotas shared by every replica, campaigns,
abandoned-order reminders and the funnel; and the service account's passive replies (the rules it
publishes to the gateway, the replies that need data, the customer-service messages that follow)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.manifests import consumed_types
from services.notify.abandoned.jobs import abandoned_forever
from services.notify.authorisations.endpoints import router as authorisations
from services.notify.campaigns.endpoints import router as campaigns
from services.notify.campaigns.jobs import campaigns_forever
from services.notify.deliveries.service import delivery_sender, delivery_sweeper
from services.notify.deps import Clock, NotifyDeps, deps_factory, utc_now
from services.notify.funnel.endpoints import router as funnel
from services.notify.replies.endpoints import router as replies
from services.notify.replies.service import load_rules as load_reply_rules
from services.notify.replies.service import reply_rules_publisher
from services.notify.rules.service import load_rules
from services.notify.sends.endpoints import router as sends
from services.notify.sends.jobs import send_forever
from services.notify.settings import NotifySettings
from services.notify.subscriptions import SUBSCRIPTIONS
from services.notify.templates.jobs import templates_forever
from shared.app import create_service_app
from shared.errors import ConfigurationError
from shared.settings import load_settings


def _readiness(deps: NotifyDeps) -> dict[str, str]:
    return {} if deps.templates.loaded else {"templates": deps.templates.problem or "not loaded"}


def create_app(
    settings: NotifySettings | None = None,
    *,
    clock: Clock = utc_now,
    wechat_transport: httpx.AsyncBaseTransport | None = None,
    identity: httpx.AsyncClient | None = None,
    commerce: httpx.AsyncClient | None = None,
) -> FastAPI:
    """``clock``, ``wechat_transport``, ``identity`` and ``commerce`` are for tests (an injected clock,
    the in-process sandbox, stand-ins for the peers); the defaults are the real ones."""
    settings = settings or load_settings(NotifySettings)
    # Bad rule files stop the start, not the first reply or message.
    load_reply_rules(settings.reply_rules_file)
    unconsumed = set(load_rules(settings.message_rules_file).event_types()) - set(SUBSCRIPTIONS)
    if unconsumed:
        # The manifest (bound at deploy time) is built from the committed rules file's events.
        raise ConfigurationError(
            f"NOTIFY_MESSAGE_RULES_FILE names events notify does not consume: {sorted(unconsumed)}; "
            "add them to deploy/dev/message-rules.yaml or services/notify/subscriptions.py"
        )
    return create_service_app(
        settings,
        make_deps=deps_factory(clock, wechat_transport, identity, commerce),
        routers=[replies, authorisations, sends, funnel, campaigns],
        subscriptions=SUBSCRIPTIONS,
        background=[
            reply_rules_publisher,
            delivery_sender,
            delivery_sweeper,
            send_forever,
            campaigns_forever,
            abandoned_forever,
            templates_forever,
        ],
        readiness=_readiness,
        consumed_types=consumed_types(),
        description=__doc__ or "",
    )
