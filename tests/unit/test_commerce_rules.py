"""commerce's pure rules and its identity client (identity faked with respx: unit tests only; the
integration tests run the real identity in-process)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import respx

from services.commerce.checkins.service import beijing_day
from services.commerce.identity_client import IdentityClient, IdentityUnavailable
from services.commerce.points.service import base_points, order_points
from services.commerce.settings import CommerceSettings
from shared.db import is_transient

IDENTITY = "http://identity.test"


def test_the_base_tier_earns_exactly_whole_yuan_times_points_per_yuan() -> None:
    assert base_points(13_599, 1) == 135  # contracts.md: order_price // 100 * SIYU_POINTS_PER_YUAN
    assert base_points(99, 1) == 0
    assert base_points(10_000, 3) == 300
    assert order_points(10_000, 1, 100, 0) == 100
    assert order_points(10_000, 1, 120, 0) == 120
    assert order_points(10_000, 1, 150, 100) == 250  # multiplier on the base, campaign bonus on the base


def test_tiers_must_ascend_from_a_base_tier() -> None:
    with pytest.raises(ValueError, match="first tier"):
        CommerceSettings(COMMERCE_TIERS=({"name": "vip", "min_spend_fen": 10, "multiplier_pct": 120},))
    with pytest.raises(ValueError, match="ascending"):
        CommerceSettings(
            COMMERCE_TIERS=(
                {"name": "base", "min_spend_fen": 0, "multiplier_pct": 100},
                {"name": "gold", "min_spend_fen": 0, "multiplier_pct": 150},
            )
        )
    settings = CommerceSettings()
    assert settings.tier_for_spend(99_999).name == "base"
    assert settings.tier_for_spend(100_000).name == "silver"
    assert settings.tier("unknown").name == "base"


def test_the_beijing_day_turns_at_16_utc() -> None:
    assert beijing_day(datetime(2026, 5, 1, 15, 59, 59, tzinfo=UTC)).isoformat() == "2026-05-01"
    assert beijing_day(datetime(2026, 5, 1, 16, 0, tzinfo=UTC)).isoformat() == "2026-05-02"


@respx.mock(base_url=IDENTITY)
async def test_the_identity_client_resolves_and_treats_failures_as_transient(respx_mock: respx.MockRouter) -> None:
    client = IdentityClient(httpx.AsyncClient(base_url=IDENTITY))
    route = respx_mock.post("/internal/identities").respond(
        200, json={"member_id": "m-1", "created": True, "unionid_known": False, "merged": []}
    )
    found = await client.member_for("wx0000000000000003", "oBuyer", None, "shop_order")
    assert (found.member_id, found.created) == ("m-1", True)
    import json

    assert json.loads(route.calls[0].request.content) == {
        "appid": "wx0000000000000003",
        "openid": "oBuyer",
        "source": "shop_order",
    }
    respx_mock.post("/internal/identities").respond(503)
    with pytest.raises(IdentityUnavailable) as info:
        await client.member_for("wx0000000000000003", "oBuyer", "u1", "shop_order")
    assert is_transient(info.value)  # the consumer holds the event instead of dead-lettering it
    respx_mock.post("/internal/identities").mock(side_effect=httpx.ConnectError("down"))
    with pytest.raises(IdentityUnavailable):
        await client.member_for("wx0000000000000003", "oBuyer", None, "shop_order")
    respx_mock.post("/internal/resolve").respond(404, json={"type": "member-not-found"})
    assert await client.known_member("wx0000000000000003", "oSharer") is None
    respx_mock.post("/internal/resolve").respond(200, json={"member_id": "m-2"})
    assert await client.known_member("wx0000000000000003", "oSharer") == "m-2"
    await client.aclose()
