"""commerce: ledger postings against a bare INSERT, the pay push → ``commerce.order.paid`` latency at a
fixed rate, and concurrent redemptions of 50 members (double spends counted).

Everything in this one process (uvloop): commerce's real app (its lifespan: asyncpg pool, its
consumer on the broker, its outbox relay in process), identity's real app behind ``ASGITransport``
(commerce resolves every buyer through it) and the WeChat sandbox shop behind ``ASGITransport``
(``order/get``). Own databases ``siyu_bench_commerce_{commerce,identity}`` and broker namespace
``bench-<random>.``, dropped at the end. Because the services share this process (and its one core),
the figures are a floor for separate processes.

Groups (n = ledger postings per case; the other groups scale from it):

``ledger``   bare asyncpg ``INSERT`` of one row shaped like ``points_entries``, one per transaction
             *(baseline)*, vs ``PointsService.earn_pending`` in a unit of work (entry + lot + account
             upsert in one statement, and the ``commerce.points.earned`` outbox row), vs a check-in
             posting (``earn_available``: account locked, entry, lot, balances, event) — all with
             as many concurrent workers as commerce's pool has connections (``db_pool_size``), on
             distinct members, alternating in rounds.
``pay``      orders created and paid in the sandbox beforehand (untimed); their pay pushes are
             published to the broker as the gateway publishes them, at ``PAY_RATE`` per second on a
             fixed schedule; latency = ``commerce.order.paid`` arriving on a probe queue − publish.
             Each handling re-fetches the order (``order/get``) and resolves the buyer (identity).
``redeem``   50 members with 100 points each, all at once (50 concurrent clients, one per member),
             each redeeming a 30-point reward 5 times in a row through commerce's route: 3 succeed
             and 2 are refused per member; every balance and the reconciliation are checked after —
             a double spend fails the run. (Many concurrent redemptions of ONE member are the
             integration test's job: each waits on the member's account row holding a pooled
             connection, so a burst beyond the pool size waits for connections.)
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from bench import register
from bench.harness import Run
from shared.observability import configure_logging

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 2
PAY_RATE = 200
MEMBERS = 50
DBS = {"commerce": "siyu_bench_commerce_commerce", "identity": "siyu_bench_commerce_identity"}

BARE_DDL = """
CREATE TABLE bare_entries (
    entry_id bigserial PRIMARY KEY, member_id varchar(64) NOT NULL, kind varchar(16) NOT NULL,
    rule varchar(32) NOT NULL, points bigint NOT NULL, available_delta bigint NOT NULL,
    pending_delta bigint NOT NULL, order_id varchar(32), lot_id bigint, ref varchar(64),
    idem_key varchar(200) NOT NULL UNIQUE, created_at timestamptz NOT NULL
);
CREATE INDEX ix_bare_entries_member ON bare_entries (member_id, entry_id)
"""
BARE_INSERT = """
INSERT INTO bare_entries (member_id, kind, rule, points, available_delta, pending_delta, order_id, idem_key, created_at)
VALUES ($1, 'earn', 'order', $2, 0, $2, $3, $4, now())
"""


def _env(namespace: str, pg: str) -> None:
    os.environ.update(
        {
            "SIYU_ENV": "test",
            "SIYU_AMQP_NAMESPACE": namespace,
            "SIYU_WECHAT_APPS_FILE": str(ROOT / "deploy" / "dev" / "wechat-apps.yaml"),
            "SIYU_RELAY_IN_PROCESS": "true",
            "SIYU_LOG_LEVEL": "WARNING",
            "COMMERCE_DATABASE_URL": f"{pg}/{DBS['commerce']}",
            "IDENTITY_DATABASE_URL": f"{pg}/{DBS['identity']}",
            "COMMERCE_RECONCILE_INTERVAL_SECONDS": "0",
            "COMMERCE_HOUSEKEEPING_INTERVAL_SECONDS": "0",
            "IDENTITY_SCHEDULE_INTERVAL_SECONDS": "0",
        }
    )


async def _drop(pg: str) -> None:
    admin = await asyncpg.connect(f"{pg}/postgres")
    try:
        for name in DBS.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Stack:
    """commerce, identity and the sandbox in this process."""

    async def start(self) -> None:
        from services.commerce.app import create_app
        from services.commerce.deps import CommerceDeps
        from services.commerce.identity_client import IdentityClient
        from services.commerce.settings import CommerceSettings
        from services.identity.app import ROUTERS
        from services.identity.deps import IdentityDeps, make_vault
        from services.identity.settings import IdentitySettings
        from shared.app import Runtime, create_service_app
        from shared.http import INTERNAL_TOKEN_HEADER, create_client
        from shared.settings import DEV_INTERNAL_TOKEN, load_settings
        from shared.wechat.client import WeChatClient
        from tools.wechat_sandbox import create_app as create_sandbox

        headers = {INTERNAL_TOKEN_HEADER: DEV_INTERNAL_TOKEN}
        isettings = load_settings(IdentitySettings, relay_in_process=False)
        apps = isettings.wechat_apps
        self.pushed: list[dict[str, Any]] = []

        def sink(request: httpx.Request) -> httpx.Response:
            from services.gateway.pushes.schemas import PushQuery
            from services.gateway.pushes.service import decode_push
            from shared.wechat.crypto import MessageCrypto

            app = apps.get(request.url.path.rsplit("/", 1)[-1])
            assert app is not None
            query = PushQuery.from_params(dict(request.url.params))
            decoded = decode_push(app, MessageCrypto.for_app(app), query, request.content, "application/json", 1 << 20)
            self.pushed.append(decoded.payload)
            return httpx.Response(200, text="success")

        self.sandbox = create_sandbox(apps, "http://gateway.invalid", seed=7, transport=httpx.MockTransport(sink))
        self.shop = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sandbox), base_url="http://sandbox")

        async def identity_deps(rt: Runtime[IdentitySettings]) -> IdentityDeps:
            unused = create_client("http://wechat.invalid", retries=0)
            return IdentityDeps(rt.settings, rt.db, WeChatClient(unused, apps), apps, make_vault(isettings))

        self.identity = create_service_app(isettings, routers=ROUTERS, make_deps=identity_deps)
        self.lifespans = [self.identity.router.lifespan_context(self.identity)]
        await self.lifespans[0].__aenter__()
        built: list[CommerceDeps] = []

        async def commerce_deps(rt: Runtime[CommerceSettings]) -> CommerceDeps:
            wechat_http = create_client("http://sandbox", retries=0, transport=httpx.ASGITransport(app=self.sandbox))
            identity_http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.identity), base_url="http://identity", headers=headers
            )
            deps = CommerceDeps(rt.settings, rt.db, WeChatClient(wechat_http, apps), IdentityClient(identity_http))
            built.append(deps)
            return deps

        self.commerce = create_app(load_settings(CommerceSettings), deps=commerce_deps)
        self.lifespans.append(self.commerce.router.lifespan_context(self.commerce))
        await self.lifespans[1].__aenter__()
        self.deps = built[0]
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.commerce), base_url="http://commerce", headers=headers
        )

    async def stop(self) -> None:
        await self.api.aclose()
        await self.shop.aclose()
        for lifespan in reversed(self.lifespans):
            await lifespan.__aexit__(None, None, None)
        await self.sandbox.state.pusher.aclose()


async def bench_ledger(run: Run, stack: Stack, pg: str) -> None:
    from services.commerce.points.service import PointsService

    db, settings = stack.deps.db, stack.deps.settings
    # The baseline gets as many connections as commerce's pool has: the same concurrency on both sides.
    workers = settings.db_pool_size
    bare = await asyncpg.create_pool(f"{pg}/{DBS['commerce']}", min_size=workers, max_size=workers)
    async with bare.acquire() as conn:
        await conn.execute(BARE_DDL)
    per_round = max(workers, run.n // ROUNDS)
    members = [str(uuid.uuid4()) for _ in range(workers)]

    async def bare_one(i: int) -> None:
        async with bare.acquire() as conn:
            await conn.execute(BARE_INSERT, members[i % workers], 10, str(i), f"bare:{uuid.uuid4()}")

    async def earn_one(i: int) -> None:
        async with db.unit_of_work() as uow:
            await PointsService(uow, settings, stack.deps.clock()).earn_pending(
                members[i % workers], f"o{uuid.uuid4().hex[:20]}", 10, rule="order"
            )

    async def checkin_one(i: int) -> None:
        async with db.unit_of_work() as uow:
            await PointsService(uow, settings, stack.deps.clock()).earn_available(
                members[i % workers], 5, rule="checkin", idem_key=f"checkin:{uuid.uuid4()}"
            )

    async def drive(case: Any, fn: Any) -> None:
        counter = iter(range(per_round))

        async def worker() -> None:
            for i in counter:
                t = time.perf_counter()
                await fn(i)
                case.latencies.add(time.perf_counter() - t)

        with case.timed():
            await asyncio.gather(*(worker() for _ in range(workers)))
        case.n += per_round

    cases = [
        (
            run.new_case(
                "bare INSERT, asyncpg, 1 row/tx", group="ledger", unit="tx/s", baseline=True, latency_of="transaction"
            ),
            bare_one,
        ),
        (
            run.new_case(
                "ledger posting: earn_pending (one statement + event)",
                group="ledger",
                unit="postings/s",
                compare_to=["bare INSERT, asyncpg, 1 row/tx"],
                latency_of="unit of work",
            ),
            earn_one,
        ),
        (
            run.new_case(
                "ledger posting: check-in (locked account, lot, event)",
                group="ledger",
                unit="postings/s",
                compare_to=["bare INSERT, asyncpg, 1 row/tx"],
                latency_of="unit of work",
            ),
            checkin_one,
        ),
    ]
    for _ in range(ROUNDS):
        for case, fn in cases:
            await drive(case, fn)
    await bare.close()
    from services.commerce.reconcile import check

    _, accounts, lots = await check(db)
    if accounts or lots:
        raise AssertionError(f"ledger does not reconcile after the postings: {accounts[:3]} {lots[:3]}")
    for case, _ in cases:
        run.record(case)


async def bench_pay(run: Run, stack: Stack, namespace: str, amqp_url: str) -> None:
    from shared.bus.topology import Topology
    from shared.events import WeChatPushReceived
    from shared.events.envelope import Envelope
    from shared.wechat.apps import AppKind
    from shared.wechat.push import parse_push

    orders = max(40, run.n // 10)
    products = (await stack.shop.get("/sandbox/shop/products")).json()
    tea = products[2]  # the canvas bag: 200 in stock; stock is raised below
    sku = tea["skus"][0]
    stack.sandbox.state.sandbox.shop(stack.deps.settings.wechat_apps.of_kind(AppKind.SHOP)[0].appid).products[
        tea["product_id"]
    ].skus[0].stock_num = orders * 2
    users = [(await stack.shop.post("/sandbox/users", json={})).json() for _ in range(min(orders, 200))]
    ids = []
    for i in range(orders):
        body = {
            "user_id": users[i % len(users)]["user_id"],
            "items": [{"product_id": tea["product_id"], "sku_id": sku["sku_id"], "count": 1}],
            "push": "none",
        }
        order_id = (await stack.shop.post("/sandbox/shop/orders", json=body)).json()["order_id"]
        ids.append(order_id)
    stack.pushed.clear()
    for order_id in ids:
        r = await stack.shop.post(f"/sandbox/shop/orders/{order_id}/pay", json={"push": "once"})
        assert r.status_code == 200, r.text
    pays = list(stack.pushed)
    envelopes = []
    for payload in pays:
        data = WeChatPushReceived(
            appid=stack.deps.settings.wechat_apps.of_kind(AppKind.SHOP)[0].appid,
            app_kind="shop",
            name="channels_ec_order_pay",
            openid=payload["FromUserName"],
            create_time=int(payload["CreateTime"]),
            dedup_key=parse_push(payload, AppKind.SHOP).dedup_key,
            push_id=1,
            payload=payload,
        )
        envelopes.append(Envelope.wrap(data, producer="gateway", event_type="wechat.shop.channels_ec_order_pay"))

    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await Topology(namespace=namespace).declare_exchanges(channel)
    probe = await channel.declare_queue(exclusive=True)
    await probe.bind(exchange, routing_key="commerce.order.paid")
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def on_paid(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            order_id = json.loads(message.body)["data"]["order_id"]
            arrived.setdefault(order_id, time.perf_counter())
            if len(arrived) >= len(envelopes):
                done.set()

    await probe.consume(on_paid)
    case = run.new_case(
        f"pay push → commerce.order.paid @ {PAY_RATE}/s",
        group="pay",
        unit="orders/s",
        latency_of="push published → event received",
    )
    with case.timed():
        t0 = time.perf_counter()
        for k, envelope in enumerate(envelopes):
            due = t0 + k / PAY_RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            order_id = str(envelope.data["payload"]["order_info"]["order_id"])
            sent[order_id] = time.perf_counter()
            await exchange.publish(
                aio_pika.Message(
                    envelope.model_dump_json().encode(),
                    message_id=str(envelope.event_id),
                    type=envelope.type,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=envelope.type,
            )
        await asyncio.wait_for(done.wait(), timeout=300)
    case.n = len(envelopes)
    for order_id, t in sent.items():
        case.latencies.add(arrived[order_id] - t)
    case.extra["offered_rate_per_s"] = PAY_RATE
    case.extra["publishing_s"] = round(max(sent.values()) - min(sent.values()), 3)
    run.record(case)
    await channel.close()
    await connection.close()


async def bench_redeem(run: Run, stack: Stack) -> None:
    from services.commerce.points.service import PointsService
    from services.commerce.reconcile import check

    members = [str(uuid.uuid4()) for _ in range(MEMBERS)]
    for m in members:
        async with stack.deps.db.unit_of_work() as uow:
            await PointsService(uow, stack.deps.settings, stack.deps.clock()).earn_available(
                m, 100, rule="adjust", idem_key=f"bench:{m}"
            )
    body = {
        "reward_id": "rw-bench",
        "title": "券",
        "kind": "coupon",
        "cost_points": 30,
        "stock": 100_000,
        "coupon": {"discount_fen": 500},
    }
    assert (await stack.api.post("/internal/admin/rewards", json=body)).status_code == 201
    tries = 5
    case = run.new_case(
        f"redemptions, {MEMBERS} members at once x {tries}",
        group="redeem",
        unit="req/s",
        latency_of="redemption request",
    )

    async def one(member: str) -> int:
        t = time.perf_counter()
        r = await stack.api.post(
            f"/internal/members/{member}/rewards/rw-bench/redemptions", headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        case.latencies.add(time.perf_counter() - t)
        return r.status_code

    async def member_worker(member: str) -> list[int]:
        return [await one(member) for _ in range(tries)]

    with case.timed():
        per_member = await asyncio.gather(*(member_worker(m) for m in members))
    statuses = [s for member_statuses in per_member for s in member_statuses]
    case.n = len(statuses)
    ok, refused = statuses.count(201), statuses.count(409)
    balances = {}
    async with stack.deps.db.connection() as conn:
        for m in members:
            balances[m] = await conn.fetchval("SELECT available FROM points_accounts WHERE member_id = $1", m)
    double_spends = sum(1 for b in balances.values() if b < 0 or b != 100 - 30 * 3)
    _, accounts, lots = await check(stack.deps.db)
    case.extra.update(
        {
            "succeeded": ok,
            "insufficient_points": refused,
            "other": len(statuses) - ok - refused,
            "double_spends": double_spends,
            "reconcile_mismatches": len(accounts) + len(lots),
        }
    )
    if ok != MEMBERS * 3 or double_spends or accounts or lots:
        raise AssertionError(f"redemptions: {case.extra}")
    run.record(case)


@register(
    "commerce",
    n=4_000,
    quick_n=400,
    description="ledger postings vs bare INSERT, pay push → commerce.order.paid latency at 200/s, 50 members redeeming",
)
async def bench(run: Run) -> None:
    from shared.settings import SiyuSettings, load_settings

    configure_logging("bench", "WARNING")
    base = load_settings(SiyuSettings)
    pg = base.postgres_dsn.rstrip("/")
    namespace = f"bench-{secrets.token_hex(3)}."
    _env(namespace, pg)
    run.facts["namespace"] = namespace
    run.facts["in one process"] = "commerce (consumer + relay), identity, sandbox"
    from shared.db import migrate

    await _drop(pg)
    for service, name in DBS.items():
        await migrate(service, f"{pg}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1))
    from services.manifests import CONSUMERS
    from shared.bus import ops

    # As `make run` does: every service's queue exists, so commerce's events are routed (to notify's
    # and identity's queues, read by nobody here) instead of refused as unroutable and retried.
    await ops.declare_topology(base.amqp_url, namespace, CONSUMERS)
    stack = Stack()
    try:
        await stack.start()
        await bench_ledger(run, stack, pg)
        await bench_pay(run, stack, namespace, base.amqp_url)
        await bench_redeem(run, stack)
    finally:
        try:
            await stack.stop()
        finally:
            from shared.bus.topology import Topology

            connection = await aio_pika.connect_robust(base.amqp_url)
            async with connection:
                await Topology(namespace=namespace).delete_all(await connection.channel(), CONSUMERS)
            await _drop(pg)
