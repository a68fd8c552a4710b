"""notify: an order paid becomes a template message in the member's inbox, and a campaign goes out
at WeChat's rate with two replicas.

Processes as ``make run REPLICAS=2`` has them: the WeChat sandbox and two notify processes over
one database (``siyu_bench_notify_notify``, migrated, dropped at the end) and a broker namespace of
the run's own. Members are seeded outside the timed bodies: sandbox users following the service
account, each with one authorisation for the campaign's subscription notice, and notify's
projection and ledger written directly (as identity's events and the popup pushes would).

``order paid → template in inbox, 200/s``  ``commerce.order.paid`` events published to the broker
    at 200 per second (commerce publishes them in the full stack); latency per order from its
    publication to notify recording WeChat's answer to ``template/send`` (goal p99 < 500 ms).
``campaign to n at L/s, 2 replicas``  a campaign to n members through both notify processes while
    the sandbox limits the subscription-notice API (``bizsend``, the campaign's channel: template
    messages are not for marketing) to L calls per second: achieved rate (goal ≥ 0.95 L), the
    sandbox's highest count in one second (goal ≤ L) and its 45011 refusals (goal 0).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from bench import register
from bench.harness import Run
from bench.stack import Stack

OA = "wx0000000000000001"
BIZSEND = "/cgi-bin/message/subscribe/bizsend"
TEMPLATE = "/cgi-bin/message/template/send"
ORDER_RATE = 200
L = 50
SANDBOX_PORT, NOTIFY_PORTS = 8190, (8193, 8203)


@register(
    "notify",
    n=2_000,
    quick_n=400,
    description="notify: order paid → template message p99 at 200/s; a campaign at the sandbox's L/s with 2 replicas",
)
async def bench(run: Run) -> None:
    import aio_pika

    from shared.bus.topology import Topology, amqp_message
    from shared.events.commerce import OrderPaid
    from shared.events.envelope import Envelope
    from shared.http import INTERNAL_TOKEN_HEADER
    from shared.settings import DEV_INTERNAL_TOKEN

    n = run.n
    async with Stack("notify") as stack:
        url = await stack.create_database("notify")
        await stack.declare_topology()
        sandbox_url = f"http://127.0.0.1:{SANDBOX_PORT}"
        stack.start(
            "sandbox",
            "tools.wechat_sandbox",
            SANDBOX_PORT,
            stack.env(
                {
                    "SANDBOX_PORT": str(SANDBOX_PORT),
                    "SIYU_GATEWAY_URL": "http://127.0.0.1:9",
                    "SANDBOX_LOG_LEVEL": "WARNING",
                }
            ),
            ready_path=f"/sandbox/templates?appid={OA}",
        )
        for i, port in enumerate(NOTIFY_PORTS):
            stack.start(
                f"notify{i + 1}",
                "services.notify",
                port,
                stack.env(
                    {
                        "NOTIFY_PORT": str(port),
                        "SIYU_WECHAT_API_BASE": sandbox_url,
                        "SIYU_RELAY_IN_PROCESS": "true",
                        "SIYU_LOG_LEVEL": "WARNING",
                        "SIYU_QUIET_HOURS": "",
                        "SIYU_MARKETING_CAP_DAY": "10",
                        "SIYU_MARKETING_CAP_WEEK": "10",
                        "NOTIFY_SENDER_POLL_SECONDS": "0.02",
                        "NOTIFY_JOBS_POLL_SECONDS": "0.2",
                        "NOTIFY_API_RATES": json.dumps({TEMPLATE: 1000, BIZSEND: L}),
                    }
                ),
            )
        await stack.wait_ready()
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=30) as sandbox:
            members = await _seed(sandbox, url, n)
            print(f"  seeded {n} members", flush=True)

            # --- order paid → template message ---------------------------------------------------
            case = run.new_case(
                f"order paid → template in inbox, {ORDER_RATE}/s",
                group="orders",
                unit="msg/s",
                latency_of="publish → WeChat's answer recorded",
            )
            connection = await aio_pika.connect(stack.amqp)
            published: dict[str, float] = {}
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await Topology(namespace=stack.namespace).declare_exchanges(channel)
                with case.timed():
                    started = time.perf_counter()
                    for i, (member_id, _) in enumerate(members):
                        await asyncio.sleep(max(0.0, started + i / ORDER_RATE - time.perf_counter()))
                        data = OrderPaid(
                            order_id=str(10**18 + i),
                            shop_appid="wx0000000000000003",
                            member_id=member_id,
                            status=20,
                            paid_fen=12800,
                            title="山茶花精华面霜",
                            item_count=1,
                            update_time=1,
                            paid_at=datetime.now(UTC),
                        )
                        env = Envelope.wrap(data, producer="bench")
                        published[member_id] = time.time()
                        await exchange.publish(
                            amqp_message(env.event_id, env.type, env.model_dump_json().encode(), {}),
                            routing_key=env.type,
                        )
                    await _until(lambda: _count(url, "rule = 'order_paid' AND status = 'sent'", n), 180, stack)
            sent = await _rows(url, "SELECT member_id, sent_at FROM sends WHERE rule = 'order_paid'")
            for row in sent:
                case.latencies.add(row["sent_at"].timestamp() - published[row["member_id"]])
            case.n = n
            case.extra = {"orders_per_second_offered": ORDER_RATE, "goal": "p99 < 500 ms"}
            run.record(case)

            # --- a campaign at the sandbox's rate, two replicas -------------------------------------
            await sandbox.post("/sandbox/limits", json={"path": BIZSEND, "per_second": L})
            headers = {INTERNAL_TOKEN_HEADER: DEV_INTERNAL_TOKEN}
            async with httpx.AsyncClient(headers=headers, timeout=30) as api:
                r = await api.post(
                    f"{stack.url('notify1')}/internal/campaigns",
                    json={
                        "name": "bench",
                        "audience": {"member_ids": [m for m, _ in members]},
                        "kind": "marketing",
                        "message": {
                            "title": "会员日双倍积分",
                            "body": "今天下单积分翻倍",
                            "page": "pages/campaign/index",
                        },
                    },
                )
                campaign_id = r.json()["campaign_id"]
                case = run.new_case(f"campaign to {n} at L={L}/s, 2 replicas", group="campaign", unit="msg/s")
                with case.timed():
                    await api.post(f"{stack.url('notify2')}/internal/campaigns/{campaign_id}/start")
                    await _until(
                        lambda: _count(
                            url, "campaign_id IS NOT NULL AND status <> 'pending' AND status <> 'deferred'", n
                        ),
                        60 + 3 * n / L,
                        stack,
                    )
            times = sorted(
                r["sent_at"].timestamp()
                for r in await _rows(
                    url, "SELECT sent_at FROM sends WHERE campaign_id IS NOT NULL AND sent_at IS NOT NULL"
                )
            )
            limits = (await sandbox.get("/sandbox/limits")).json()[BIZSEND]
            achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
            case.n = len(times)
            case.extra = {
                "L": L,
                "sent": len(times),
                "achieved_per_second": round(achieved, 2),
                "achieved_over_L": round(achieved / L, 3),
                "peak_per_second": limits["peak_per_second"],
                "rejected_45011": limits["rejected"],
                "goal": "achieved >= 0.95 L, peak <= L, zero 45011",
            }
            run.record(case)
            run.facts["campaign"] = case.extra
            print(f"  campaign: {case.extra}", flush=True)
        run.process_peak_rss_mb.update(stack.peak_rss())


async def _seed(sandbox: httpx.AsyncClient, url: str, n: int) -> list[tuple[str, str]]:
    templates = (await sandbox.get(f"/sandbox/templates?appid={OA}")).json()
    activity = next(t["template_id"] for t in templates if t["title"] == "活动开始提醒" and t["kind"] != "template")
    sem = asyncio.Semaphore(16)

    async def one() -> tuple[str, str]:
        async with sem:
            user = (await sandbox.post("/sandbox/users", json={"unionid_bound": True})).json()
            await sandbox.post(f"/sandbox/users/{user['user_id']}/follow", json={"appid": OA})
            await sandbox.post(
                f"/sandbox/users/{user['user_id']}/subscribe-popup", json={"appid": OA, "results": {activity: "accept"}}
            )
            return str(uuid.uuid4()), user["openids"][OA]

    members = list(await asyncio.gather(*(one() for _ in range(n))))
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO member_apps (appid, openid, member_id, app_kind, following) "
            "VALUES ($1, $2, $3, 'official_account', true)",
            [(OA, openid, member_id) for member_id, openid in members],
        )
        await conn.executemany(
            "INSERT INTO authorisations (appid, openid, template_id, remaining) VALUES ($1, $2, $3, 1)",
            [(OA, openid, activity) for _, openid in members],
        )
    finally:
        await conn.close()
    return members


async def _rows(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _count(url: str, where: str, n: int) -> bool:
    return len(await _rows(url, f"SELECT 1 FROM sends WHERE {where}")) >= n


async def _summary(stack: Stack) -> list[tuple[Any, ...]]:
    rows = await _rows(stack.databases["notify"], "SELECT status, reason, count(*) FROM sends GROUP BY 1, 2")
    return [tuple(r) for r in rows]


async def _until(check: Any, within_s: float, stack: Stack) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        stack.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"the benchmark's sends did not all arrive in time: {await _summary(stack)}")
        await asyncio.sleep(0.2)
