"""Events that failed for good, from both places they end up, under one list and one verb.

* **sends**: a message notify gave up on after its retries; notify keeps them
  (``/internal/dead-letters``) and re-drives one by id (back to pending, a fresh retry budget).
* **events**: an event a consuming service's handler gave up on; RabbitMQ keeps it in that service's
  ``<service>.events.dlq`` (``shared/bus/ops.py``, the same operations as ``siyuctl dlq``). Listing
  reads without removing; a re-drive moves that event (every copy of it) back to that service's own
  queue only, so no other service sees it twice.

Ids are stable across listings: ``send-<n>`` (notify's send id) and ``event-<service>-<event_id>``.
A listing reads each dead-letter queue with unacknowledged gets, so a second operator listing at the
same instant sees that queue's letters a moment later.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
from fastapi import Response

from services.gateway.deadletters.schemas import DEAD_LETTERS, NOTIFY_DEAD_SENDS, DeadEvent, DeadSend, Redriven
from services.gateway.settings import GatewaySettings
from services.gateway.upstreams import Upstreams
from services.manifests import CONSUMERS
from shared.bus import ops
from shared.errors import DependencyUnavailable, NotFound
from shared.observability import get_logger

log = get_logger(__name__)

_SEND_ID = re.compile(r"^send-[0-9]{1,18}$")
_EVENT_ID = re.compile(r"^event-(?P<service>[a-z]+)-(?P<event_id>[A-Za-z0-9._:-]{1,128})$")
_EPOCH = datetime.min.replace(tzinfo=UTC)


def _aware(at: Any) -> datetime | None:
    if not isinstance(at, datetime):
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def dead_event(service: str, summary: dict[str, Any]) -> DeadEvent:
    event_id = summary.get("event_id")
    usable = isinstance(event_id, str) and _EVENT_ID.match(f"event-{service}-{event_id}") is not None
    attempts = summary.get("attempts")
    return DeadEvent(
        id=f"event-{service}-{event_id}" if usable else None,
        service=service,
        event_id=event_id if isinstance(event_id, str) else None,
        type=summary.get("type"),
        attempts=attempts if isinstance(attempts, int) else None,
        error=str(summary["error"])[:1000] if summary.get("error") else None,
        created_at=_aware(summary.get("timestamp")),
    )


class DeadLetters:
    def __init__(self, upstreams: Upstreams, settings: GatewaySettings, consumers: Sequence[str] = tuple(CONSUMERS)):
        self.upstreams = upstreams
        self.settings = settings
        self.consumers = consumers

    async def listing(self, limit: int) -> Response:
        """Both kinds, newest first; 503 naming the source that cannot be read (never a silent half)."""
        sends, events = await asyncio.gather(self._sends(limit), self._events(limit))
        letters: list[DeadSend | DeadEvent] = [*sends, *events]
        letters.sort(key=lambda d: d.created_at or _EPOCH, reverse=True)
        return Response(DEAD_LETTERS.dump_json(letters), media_type="application/json")

    async def _sends(self, limit: int) -> list[DeadSend]:
        response = await self.upstreams.request("notify", "GET", "/internal/dead-letters", params={"limit": str(limit)})
        try:
            return NOTIFY_DEAD_SENDS.validate_json(response.content)
        except ValueError:
            log.error("deadletters.bad_notify_body")
            raise DependencyUnavailable("notify's dead letters could not be read; retry later") from None

    async def _events(self, limit: int) -> list[DeadEvent]:
        try:
            peeked = await ops.dlq_peek(self.settings.amqp_url, self.settings.amqp_namespace, self.consumers, limit)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            log.warning("deadletters.broker_unavailable", error=repr(exc))
            raise DependencyUnavailable("the broker's dead-letter queues cannot be read now; retry later") from exc
        return [dead_event(service, s) for service, summaries in peeked.items() for s in summaries]

    async def redrive(self, dead_letter_id: str) -> Response:
        if _SEND_ID.match(dead_letter_id):
            await self.upstreams.request(
                "notify",
                "POST",
                f"/internal/dead-letters/{dead_letter_id}/redrive",
                expect=frozenset({200, 202}),
                errors={404: lambda _: NotFound(f"no dead letter {dead_letter_id}")},
                retry_safe=True,  # notify re-drives a send only while it is dead
            )
            return _accepted(Redriven(id=dead_letter_id, kind="send"))
        match = _EVENT_ID.match(dead_letter_id)
        if match is None or match["service"] not in self.consumers:
            raise NotFound(f"no dead letter {dead_letter_id}")
        try:
            moved = await ops.dlq_redrive(
                self.settings.amqp_url, self.settings.amqp_namespace, match["service"], event_id=match["event_id"]
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            log.warning("deadletters.broker_unavailable", error=repr(exc))
            raise DependencyUnavailable("the broker cannot be reached now; retry later") from exc
        if not moved:
            raise NotFound(f"no dead letter {dead_letter_id}")
        log.info("deadletters.redriven", id=dead_letter_id, copies=moved)
        return _accepted(Redriven(id=dead_letter_id, kind="event"))


def _accepted(answer: Redriven) -> Response:
    return Response(answer.model_dump_json(), status_code=202, media_type="application/json")
