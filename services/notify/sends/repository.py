"""The send log: one row per message considered for a member, from decision to receipt and order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Database, delete_in_batches

_COLUMNS = """id, idempotency_key, member_id, rule, campaign_id, kind, channel, appid, openid, template_id, data,
page, status, reason, attempts, authorised, cap_counted, due_at, lease_until"""

_INSERT = """
INSERT INTO sends (idempotency_key, member_id, rule, campaign_id, kind, priority, status, due_at)
VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""
_DECIDE = """
UPDATE sends SET channel = $2, appid = $3, openid = $4, template_id = $5, data = $6, page = $7,
    status = $8, reason = $9, authorised = $10, due_at = COALESCE($11, due_at)
WHERE id = $1
"""
# Due sends for this replica: leased (not locked) so no transaction is held across WeChat's call.
_CLAIM = f"""
UPDATE sends s SET lease_until = $2::timestamptz + make_interval(secs => $3)
FROM (SELECT id FROM sends
      WHERE status IN ('pending', 'deferred') AND due_at <= $2 AND (lease_until IS NULL OR lease_until < $2)
        AND (calling_at IS NULL OR channel = 'oa_template')
      ORDER BY priority DESC, due_at LIMIT $1 FOR UPDATE SKIP LOCKED) c
WHERE s.id = c.id
RETURNING {", ".join("s." + c.strip() for c in _COLUMNS.split(","))}
"""
_RESCHEDULE = """
UPDATE sends SET status = $2, reason = $3, due_at = $4, lease_until = NULL, calling_at = NULL,
    attempts = attempts + $5
WHERE id = $1 AND status IN ('pending', 'deferred')
"""
_SENT = """
UPDATE sends SET status = 'sent', reason = NULL, msgid = $2, sent_at = now(), lease_until = NULL,
    attempts = attempts + 1
WHERE id = $1 AND status IN ('pending', 'deferred')
"""
_FAILED = """
UPDATE sends SET status = 'failed', reason = $2, errcode = $3, dead = $4, lease_until = NULL, attempts = attempts + $5
WHERE id = $1 AND status IN ('pending', 'deferred')
"""
_SKIPPED = """
UPDATE sends SET status = 'skipped', reason = $2, lease_until = NULL
WHERE id = $1 AND status IN ('pending', 'deferred')
"""
# Fenced by the lease: a sender whose lease ran out (and was claimed again) must not act on the send.
_CAP_COUNTED = """
UPDATE sends SET cap_counted = true WHERE id = $1 AND lease_until = $2 AND NOT cap_counted RETURNING true
"""
_CALLING = """
UPDATE sends SET calling_at = now(), lease_until = $3::timestamptz + make_interval(secs => $4)
WHERE id = $1 AND lease_until = $2 AND status IN ('pending', 'deferred') RETURNING true
"""
# A replica died during WeChat's call: only a template message (client_msg_id) may be sent again;
# any other may have reached the member, and a second one must not.
_UNKNOWN = """
UPDATE sends SET status = 'failed', reason = 'outcome_unknown', lease_until = NULL, dead = true
WHERE id IN (SELECT id FROM sends WHERE status IN ('pending', 'deferred') AND calling_at IS NOT NULL
             AND channel <> 'oa_template' AND lease_until < $1 LIMIT 100 FOR UPDATE SKIP LOCKED)
RETURNING id
"""

_RECEIPT_BY_MSGID = """
UPDATE sends SET status = CASE WHEN $3 THEN 'delivered' ELSE 'failed' END,
    reason = CASE WHEN $3 THEN NULL ELSE $4 END,
    delivered_at = CASE WHEN $3 THEN now() ELSE NULL END
WHERE appid = $1 AND msgid = $2 AND status = 'sent'
RETURNING id
"""
_RECEIPT_BY_TEMPLATE = """
UPDATE sends SET status = CASE WHEN $4 THEN 'delivered' ELSE 'failed' END,
    reason = CASE WHEN $4 THEN NULL ELSE $5 END,
    delivered_at = CASE WHEN $4 THEN now() ELSE NULL END
WHERE id = (SELECT id FROM sends WHERE appid = $1 AND openid = $2 AND template_id = $3 AND status = 'sent'
            ORDER BY sent_at DESC LIMIT 1)
RETURNING id
"""
_IN_FLIGHT = """
SELECT EXISTS (SELECT 1 FROM sends WHERE appid = $1 AND openid = $2 AND status IN ('pending', 'deferred')
               AND lease_until IS NOT NULL)
"""

_LOG = """
SELECT id, rule, campaign_id, kind, channel, status, reason, errcode, template_id, page, attempts,
       created_at, due_at, sent_at, delivered_at, opened_at, ordered_at, order_id
FROM sends WHERE member_id = $1 ORDER BY id DESC LIMIT $2
"""

_OPENED = """
UPDATE sends SET opened_at = COALESCE(opened_at, $3)
WHERE id = $1 AND member_id = $2 AND status IN ('sent', 'delivered')
RETURNING id, rule, campaign_id
"""
_ORDERED = """
UPDATE sends SET ordered_at = $3, order_id = $2
WHERE id = (SELECT id FROM sends
            WHERE member_id = $1 AND opened_at IS NOT NULL AND opened_at <= $3
              AND opened_at >= $3::timestamptz - make_interval(secs => $4) AND ordered_at IS NULL
            ORDER BY opened_at DESC LIMIT 1)
  AND NOT EXISTS (SELECT 1 FROM sends WHERE order_id = $2)
RETURNING id
"""

_FUNNEL = """
SELECT COALESCE(rule, '') AS rule, campaign_id,
       count(*) AS considered,
       count(*) FILTER (WHERE status IN ('sent', 'delivered')) AS sent,
       count(*) FILTER (WHERE status = 'delivered') AS delivered,
       count(*) FILTER (WHERE opened_at IS NOT NULL) AS opened,
       count(*) FILTER (WHERE ordered_at IS NOT NULL) AS ordered,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'skipped') AS skipped
FROM sends GROUP BY 1, 2 ORDER BY 1, 2
"""

_CAMPAIGN_STATS = """
SELECT count(*) AS targeted,
       count(*) FILTER (WHERE status IN ('sent', 'delivered')) AS sent,
       count(*) FILTER (WHERE status = 'delivered') AS delivered,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status IN ('pending', 'deferred')) AS waiting,
       count(*) FILTER (WHERE opened_at IS NOT NULL) AS opened,
       count(*) FILTER (WHERE ordered_at IS NOT NULL) AS ordered,
       COALESCE((SELECT jsonb_object_agg(reason, n) FROM (
           SELECT reason, count(*) AS n FROM sends WHERE campaign_id = $1 AND status = 'skipped' GROUP BY reason) r),
           '{}'::jsonb)
           AS skipped,
       COALESCE((SELECT jsonb_object_agg(channel, n) FROM (
           SELECT channel, count(*) AS n FROM sends WHERE campaign_id = $1 AND channel IS NOT NULL
           AND status IN ('sent', 'delivered') GROUP BY channel) c), '{}'::jsonb) AS channels
FROM sends WHERE campaign_id = $1
"""
_CANCEL_CAMPAIGN = """
UPDATE sends SET status = 'skipped', reason = 'cancelled', lease_until = NULL
WHERE campaign_id = $1 AND status IN ('pending', 'deferred') AND (lease_until IS NULL OR lease_until < $2)
RETURNING id, channel, appid, openid, template_id, authorised
"""

_DEAD = """
SELECT id, member_id, rule, campaign_id, channel, reason, errcode, attempts, created_at
FROM sends WHERE dead ORDER BY id LIMIT $1
"""
# The dead send's last call is over (it failed): clear its mark, or the sender (which never claims a
# send whose call may still be running, unless it is a template message) would never send it again.
_REDRIVE = """
UPDATE sends SET status = 'pending', dead = false, attempts = 0, reason = NULL, errcode = NULL, due_at = $2,
    lease_until = NULL, calling_at = NULL
WHERE id = $1 AND dead RETURNING id
"""


@dataclass(frozen=True)
class Send:
    id: int
    idempotency_key: str
    member_id: str
    rule: str | None
    campaign_id: uuid.UUID | None
    kind: str
    channel: str | None
    appid: str | None
    openid: str | None
    template_id: str | None
    data: dict[str, Any]
    page: str | None
    status: str
    reason: str | None
    attempts: int
    authorised: bool
    cap_counted: bool
    due_at: datetime
    lease_until: datetime | None


class SendRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(
        self,
        key: str,
        member_id: str,
        *,
        rule: str | None,
        campaign_id: uuid.UUID | None,
        kind: str,
        due_at: datetime,
    ) -> int | None:
        priority = 1 if kind == "transactional" else 0
        send_id: int | None = await self.conn.fetchval(
            _INSERT, key, member_id, rule, campaign_id, kind, priority, due_at
        )
        return send_id

    async def decide(
        self,
        send_id: int,
        *,
        channel: str | None,
        appid: str | None,
        openid: str | None,
        template_id: str | None,
        data: dict[str, Any],
        page: str | None,
        status: str,
        reason: str | None,
        authorised: bool,
        due_at: datetime | None,
    ) -> None:
        await self.conn.execute(
            _DECIDE, send_id, channel, appid, openid, template_id, data, page, status, reason, authorised, due_at
        )

    async def claim(self, limit: int, now: datetime, lease: float) -> list[Send]:
        return [Send(**dict(r)) for r in await self.conn.fetch(_CLAIM, limit, now, lease)]

    async def reschedule(
        self, send_id: int, status: str, reason: str | None, due_at: datetime, attempt: int = 0
    ) -> None:
        await self.conn.execute(_RESCHEDULE, send_id, status, reason, due_at, attempt)

    async def sent(self, send_id: int, msgid: str | None) -> None:
        await self.conn.execute(_SENT, send_id, msgid)

    async def failed(
        self, send_id: int, reason: str, errcode: int | None, *, dead: bool = False, attempt: int = 1
    ) -> None:
        await self.conn.execute(_FAILED, send_id, reason, errcode, dead, attempt)

    async def skipped(self, send_id: int, reason: str) -> None:
        await self.conn.execute(_SKIPPED, send_id, reason)

    async def cap_counted(self, send_id: int, lease: datetime) -> bool:
        return bool(await self.conn.fetchval(_CAP_COUNTED, send_id, lease))

    async def calling(self, send_id: int, lease: datetime, now: datetime, seconds: float) -> bool:
        """Mark the call as under way (and renew the lease for it); False when the lease was lost."""
        return bool(await self.conn.fetchval(_CALLING, send_id, lease, now, seconds))

    async def outcome_unknown(self, now: datetime) -> int:
        return len(await self.conn.fetch(_UNKNOWN, now))

    async def receipt_by_msgid(self, appid: str, msgid: str, delivered: bool, reason: str | None) -> bool:
        return await self.conn.fetchval(_RECEIPT_BY_MSGID, appid, msgid, delivered, reason) is not None

    async def receipt_by_template(
        self, appid: str, openid: str, template_id: str, delivered: bool, reason: str | None
    ) -> bool:
        return await self.conn.fetchval(_RECEIPT_BY_TEMPLATE, appid, openid, template_id, delivered, reason) is not None

    async def in_flight(self, appid: str, openid: str) -> bool:
        return bool(await self.conn.fetchval(_IN_FLIGHT, appid, openid))

    async def log(self, member_id: str, limit: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(_LOG, member_id, limit)]

    async def opened(self, send_id: int, member_id: str, at: datetime) -> dict[str, Any] | None:
        row = await self.conn.fetchrow(_OPENED, send_id, member_id, at)
        return dict(row) if row else None

    async def ordered(self, member_id: str, order_id: str, at: datetime, window_seconds: float) -> int | None:
        send_id: int | None = await self.conn.fetchval(_ORDERED, member_id, order_id, at, window_seconds)
        return send_id

    async def funnel(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(_FUNNEL)]

    async def campaign_stats(self, campaign_id: uuid.UUID) -> dict[str, Any]:
        row = await self.conn.fetchrow(_CAMPAIGN_STATS, campaign_id)
        return dict(row) if row else {}

    async def cancel_campaign(self, campaign_id: uuid.UUID, now: datetime) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(_CANCEL_CAMPAIGN, campaign_id, now)]

    async def dead(self, limit: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(_DEAD, limit)]

    async def redrive(self, send_id: int, now: datetime) -> bool:
        return await self.conn.fetchval(_REDRIVE, send_id, now) is not None


# --- retention (services/notify/retention.py; the README's "Retention") ---------------------------

# A finished send older than the horizon. A campaign's sends go only once its recap is stored on the
# campaign (retention.freeze_recaps), so a recap never changes as they go and a campaign in progress
# keeps them all; a pending or deferred send is not in the index and is never deleted.
SENDS_EXPIRED = """status IN ('sent', 'delivered', 'failed', 'skipped') AND created_at < $1
AND (campaign_id IS NULL OR campaign_id IN (SELECT id FROM campaigns WHERE recap IS NOT NULL))"""


async def prune_sends(db: Database, before: datetime) -> int:
    """Finished sends created before ``before`` (walks ix_sends_done_created_at)."""
    return await delete_in_batches(db, "sends", SENDS_EXPIRED, before)
