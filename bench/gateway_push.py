"""Encrypted service-account pushes per second through the gateway, against bare endpoints.

The stack runs as real processes (``bench/stack.py``): the gateway as ``python -m services.gateway``
runs it (twice: one process storing each push with its own statement, one with group commit), notify
(it publishes its reply rules, which the gateway then answers from), the outbox relay process, and
``bench/bare_app.py`` under the same server settings (uvicorn, one worker, uvloop, httptools).
Own databases ``siyu_bench_push_{gateway,notify}`` and ``siyu_bench_pushbare_gateway`` (the bare
endpoint's), own broker namespace, dropped at the end. ``wrk`` (one thread) is the load generator.

Every push is distinct, signed and encrypted as WeChat sends it in safe mode
(``MessageCrypto.encrypt_push`` and ``sign``): its own nonce, ``timestamp`` = now (pushes are built
just before the round that sends them), a text message with its own ``MsgId`` that matches no
reply rule (most user messages), so the answer is ``success`` — the bytes the floor answers.

Cases (rounds alternate; n = seconds of load per case, split over the rounds):

``no-op floor``                FastAPI reads the body and answers ``success``.
``bare FastAPI + asyncpg``     the same request; the push path's database work only: the one
                               statement ``STORE_PUSHES`` (replay store, inbound log, outbox row,
                               relay wake-up), keyed by nonce and body digest, nothing else.
``push path``                  verify, decrypt, parse, the one-statement store, the reply decision
                               from the rule copy, ``success``.
``push path, group commit``    the same on a gateway with ``GATEWAY_PUSH_BATCH_WINDOW_MS``: pushes
                               arriving within the window share one statement and one commit.
``@ 70 %``                     a constant rate of 70 % of the push path's peak, for p99.
``cost split`` (in-process)    decode + parse, and the store statement, sequentially.

Checks: no wrk errors (every answer 2xx), one inbound push and one outbox row per answered push (at
most ``connections`` more: requests in flight when wrk stopped), the relay drained before the next
case.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import register
from bench.harness import Case, Run
from bench.stack import ROOT, CpuMeter, HttpCase, Stack, write_requests
from services.gateway.pushes.repository import PushIds, PushWriter
from services.gateway.pushes.schemas import PushQuery
from services.gateway.pushes.service import PushService, decode_push
from services.notify.replies.service import load_rules
from shared.db import Database
from shared.observability import configure_logging
from shared.replies import ReplyAsk
from shared.wechat.apps import AppKind, WeChatApp, load_apps
from shared.wechat.codec import render_xml
from shared.wechat.crypto import MessageCrypto, sign
from shared.wechat.push import parse_push

PORTS = {"gateway": 19100, "gateway_gc": 19104, "notify": 19103, "relay": 19105, "bare": 19199, "wechat": 19190}
# Not started: the push path never calls them. The sandbox (WeChat) only serves notify's template
# library at its start; no push calls it.
UNUSED = {"identity": 19101, "commerce": 19102}
CONNECTIONS = 8
STEADY_CONNECTIONS = 16  # constant rate: connections only need to exceed rate x latency
ROUNDS = 2
STEADY_SHARE = 0.7
TARGET_RATIO = 0.35  # the data-path issue: push path >= 35 % of the no-op floor
TARGET_P99_MS = 50.0  # p99 < 50 ms at 70 % of its own peak
GROUP_COMMIT_MS = "1.5"
USERS = 1_000
POOL_HEADROOM = 3.0
DIAG_N = 300
TEXT = "bench message number {i} from the load test"  # matches no keyword rule (checked)


class Pushes:
    """Builds distinct, signed, safe-mode text pushes of the service account, as WeChat sends them."""

    def __init__(self, app: WeChatApp) -> None:
        self.app = app
        self.crypto = MessageCrypto.for_app(app)
        self.to_user = app.original_id or "gh_bench"
        self.tag = secrets.token_hex(3)
        self.msg_id_base = 7_000_000_000_000_000_000 + secrets.randbelow(10**15) * 1000
        self.next = 0

    def build(self, count: int) -> list[tuple[PushQuery, bytes, str]]:
        """``count`` new pushes: (query, body, request target)."""
        now = int(time.time())
        ts = str(now)
        out = []
        for _ in range(count):
            i = self.next
            self.next += 1
            payload = {
                "ToUserName": self.to_user,
                "FromUserName": f"oBench{self.tag}{i % USERS:06d}",
                "CreateTime": now,
                "MsgType": "text",
                "Content": TEXT.format(i=i),
                "MsgId": self.msg_id_base + i,
            }
            nonce = f"{secrets.randbelow(10**10):010d}{i}"
            body, msg_signature = self.crypto.encrypt_push(
                render_xml(payload).encode(), ts, nonce, to_user=self.to_user
            )
            target = (
                f"/wechat/callbacks/{self.app.appid}?signature={sign(self.app.token, ts, nonce)}&timestamp={ts}"
                f"&nonce={nonce}&openid={payload['FromUserName']}&encrypt_type=aes&msg_signature={msg_signature}"
            )
            out.append((PushQuery(sign(self.app.token, ts, nonce), ts, nonce, "aes", msg_signature), body, target))
        return out

    def write(self, path: Path, count: int, prefix: str = "") -> int:
        rows = [
            ("POST", prefix + target, {"Content-Type": "text/xml"}, body.decode())
            for _, body, target in self.build(count)
        ]
        return write_requests(path, rows)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"benchmark invariant broken: {what}")


class PushDb:
    """Reads a push database between rounds (never while wrk runs)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def _conn(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def mark(self) -> dict[str, int]:
        conn = await self._conn()
        try:
            return {
                "push": await conn.fetchval("SELECT count(*) FROM inbound_pushes"),
                "outbox": await conn.fetchval("SELECT count(*) FROM outbox WHERE type = 'wechat.oa.text'"),
            }
        finally:
            await conn.close()

    async def since(self, mark: dict[str, int]) -> dict[str, int]:
        now = await self.mark()
        return {"stored": now["push"] - mark["push"], "outbox": now["outbox"] - mark["outbox"]}

    async def wait_drained(self, within_s: float = 60) -> tuple[int, float]:
        """(outbox rows pending when called, seconds until none is): the relay catching up."""
        conn = await self._conn()
        try:
            t0 = time.perf_counter()
            first = None
            while True:
                pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'")
                first = pending if first is None else first
                if not pending:
                    return first, time.perf_counter() - t0
                if time.perf_counter() - t0 > within_s:
                    raise AssertionError(f"the outbox relay did not drain {pending} events in {within_s:.0f}s")
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def rules_version(self) -> str | None:
        conn = await self._conn()
        try:
            value = await conn.fetchval("SELECT version FROM reply_rules WHERE name = 'passive'")
            return str(value) if value is not None else None
        finally:
            await conn.close()


async def wait_for_rules(db: PushDb, gateways: list[str], pushes: Pushes, version: str) -> None:
    """notify published its rules, the gateway's consumer stored them, every gateway serves them."""
    deadline = time.monotonic() + 30
    while await db.rules_version() != version:
        if time.monotonic() > deadline:
            raise AssertionError("the gateway never received notify's reply rules")
        await asyncio.sleep(0.1)
    async with httpx.AsyncClient(timeout=5) as client:
        for url in gateways:
            while True:
                payload = {
                    "ToUserName": pushes.to_user,
                    "FromUserName": f"oProbe{secrets.token_hex(4)}",
                    "CreateTime": int(time.time()),
                    "MsgType": "text",
                    "Content": "help",
                    "MsgId": secrets.randbelow(10**18),
                }
                ts, nonce = str(int(time.time())), secrets.token_hex(8)
                body, msg_signature = pushes.crypto.encrypt_push(
                    render_xml(payload).encode(), ts, nonce, to_user=pushes.to_user
                )
                params = {
                    "signature": sign(pushes.app.token, ts, nonce),
                    "timestamp": ts,
                    "nonce": nonce,
                    "encrypt_type": "aes",
                    "msg_signature": msg_signature,
                }
                r = await client.post(f"{url}/wechat/callbacks/{pushes.app.appid}", params=params, content=body)
                if r.status_code == 200 and r.text != "success":
                    break  # the keyword rule answered: this replica has the copy
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} never served notify's reply rules")
                await asyncio.sleep(0.2)


async def cost_split(run: Run, pushes: Pushes, dsn: str) -> list[Case]:
    """Two steps of the push path, in this process, sequentially, on the gateway's database."""
    app = pushes.app
    built = pushes.build(DIAG_N)
    decode = run.new_case("in-process: decode + parse", group="cost split", unit="pushes/s", latency_of="push")
    decoded = []
    with decode.timed():
        for query, body, _ in built:
            t0 = time.perf_counter()
            d = decode_push(app, pushes.crypto, query, body, "text/xml", 64 * 1024)
            parse_push(d.payload, app.kind)
            decoded.append((query, body, d))
            decode.latencies.add(time.perf_counter() - t0)
    decode.n = len(built)

    db = await Database(dsn, producer="gateway", max_size=2).open()
    store = run.new_case(
        "in-process: accept (event, one-statement store)", group="cost split", unit="pushes/s", latency_of="push"
    )
    try:
        service = PushService(PushWriter(db), PushIds(db), db.outbox)
        query, body, d = decoded[0]
        await service.accept(app, query, body, d)  # warm the connection's statement cache
        with store.timed():
            for query, body, d in decoded[1:]:
                t0 = time.perf_counter()
                await service.accept(app, query, body, d)
                store.latencies.add(time.perf_counter() - t0)
        store.n = len(decoded) - 1
    finally:
        await db.close()
    return [decode, store]


@register(
    "gateway_push",
    n=8,
    quick_n=2,
    description="encrypted service-account pushes/s through the gateway (wrk) vs a no-op floor and bare asyncpg",
)
async def bench(run: Run) -> None:
    configure_logging("bench", "WARNING")
    seconds = run.n / ROUNDS
    steady_seconds = float(max(2, round(run.n * 0.75)))
    apps = load_apps(os.environ.get("SIYU_WECHAT_APPS_FILE") or ROOT / "deploy" / "dev" / "wechat-apps.yaml")
    oa = apps.first(AppKind.OFFICIAL_ACCOUNT)
    rules = load_rules(ROOT / "deploy" / "dev" / "reply-rules.yaml")
    for probe in (0, 123, 999_999):
        check(
            rules.answer_for(ReplyAsk(trigger="text", text=TEXT.format(i=probe))) is None,
            "the benchmark's text must match no reply rule",
        )
    pushes = Pushes(oa)

    async with Stack("push") as stack, Stack("pushbare") as bare_db:
        await stack.create_database("gateway")
        await stack.create_database("notify")
        bare_dsn = await bare_db.create_database("gateway")
        await stack.declare_topology()
        base_env = {
            "SIYU_WECHAT_API_BASE": f"http://127.0.0.1:{PORTS['wechat']}",
            "SANDBOX_PORT": str(PORTS["wechat"]),
            "NOTIFY_PORT": str(PORTS["notify"]),
            "RELAY_PORT": str(PORTS["relay"]),
            "GATEWAY_NOTIFY_URL": f"http://127.0.0.1:{PORTS['notify']}",
            "GATEWAY_IDENTITY_URL": f"http://127.0.0.1:{UNUSED['identity']}",
            "GATEWAY_COMMERCE_URL": f"http://127.0.0.1:{UNUSED['commerce']}",
            "BARE_PORT": str(PORTS["bare"]),
            "BARE_DATABASE_URL": bare_dsn,
        }
        env = stack.env({**base_env, "GATEWAY_PORT": str(PORTS["gateway"])})
        env_gc = stack.env(
            {**base_env, "GATEWAY_PORT": str(PORTS["gateway_gc"]), "GATEWAY_PUSH_BATCH_WINDOW_MS": GROUP_COMMIT_MS}
        )
        stack.start("sandbox", "tools.wechat_sandbox", PORTS["wechat"], env, ready_path="/health")
        stack.start("notify", "services.notify", PORTS["notify"], env)
        stack.start("relay", "services.relay", PORTS["relay"], env, args=["gateway", "notify"])
        stack.start("gateway", "services.gateway", PORTS["gateway"], env)
        stack.start("gateway_gc", "services.gateway", PORTS["gateway_gc"], env_gc)
        stack.start("bare", "bench.bare_app", PORTS["bare"], env, ready_path="/health")
        await stack.wait_ready()
        meter = CpuMeter(stack)
        db = PushDb(stack.databases["gateway"])
        bare_store_db = PushDb(bare_dsn)
        work = stack.logdir
        gateway, gateway_gc, bare_url = stack.url("gateway"), stack.url("gateway_gc"), stack.url("bare")
        await wait_for_rules(db, [gateway, gateway_gc], pushes, rules.version)

        # Warm-up (untimed): connections, pools, caches; its rate sizes the pools of distinct pushes.
        pushes.write(work / "warm.txt", 3_000)
        warm = await HttpCase(Case("warm-up", "warm", "req/s"), "gateway").measure(
            stack, meter, gateway, work / "warm.txt", connections=CONNECTIONS, seconds=2.0, distinct=True
        )
        pushes.write(work / "warm-gc.txt", 3_000)
        await HttpCase(Case("warm-up gc", "warm", "req/s"), "gateway_gc").measure(
            stack, meter, gateway_gc, work / "warm-gc.txt", connections=CONNECTIONS, seconds=1.0, distinct=True
        )
        pushes.write(work / "warm-bare.txt", 6_000, prefix="/bare-store")
        await HttpCase(Case("warm-up bare", "warm", "req/s"), "bare").measure(
            stack, meter, bare_url, work / "warm-bare.txt", connections=CONNECTIONS, seconds=1.0, distinct=True
        )
        await db.wait_drained()  # the bare database has no relay: its outbox rows stay pending, as written
        est_rate = max(warm.rate, 100.0)

        floor = HttpCase(
            run.new_case(
                "no-op floor (FastAPI, returns success)",
                group="peak",
                unit="req/s",
                baseline=True,
                latency_of="request, wrk",
            ),
            "bare",
        )
        bare_store = HttpCase(
            run.new_case(
                "bare FastAPI + asyncpg, the same store statement",
                group="peak",
                unit="pushes/s",
                baseline=True,
                latency_of="request, wrk",
            ),
            "bare",
        )
        single = HttpCase(
            run.new_case(
                "push path (one statement per push)",
                group="peak",
                unit="pushes/s",
                compare_to=[floor.case.name, bare_store.case.name],
                latency_of="push, wrk",
            ),
            "gateway",
        )
        grouped = HttpCase(
            run.new_case(
                f"push path, group commit {GROUP_COMMIT_MS} ms",
                group="peak",
                unit="pushes/s",
                compare_to=[floor.case.name, bare_store.case.name, single.case.name],
                latency_of="push, wrk",
            ),
            "gateway_gc",
        )
        stats: dict[str, list[dict[str, Any]]] = {}

        async def push_round(
            h: HttpCase,
            url: str,
            store_db: PushDb,
            *,
            prefix: str = "",
            rate: float = 0.0,
            run_seconds: float = seconds,
            connections: int = CONNECTIONS,
        ) -> None:
            pool = math.ceil(max(rate, est_rate * (3 if prefix else 1)) * run_seconds * POOL_HEADROOM) + 500
            file = work / f"{h.server}{prefix.replace('/', '-')}.txt"
            pushes.write(file, pool, prefix=prefix)
            mark = await store_db.mark()
            res = await h.measure(
                stack, meter, url, file, connections=connections, seconds=run_seconds, rate=rate, distinct=True
            )
            pending, drain_s = await store_db.wait_drained() if store_db is db else (0, 0.0)
            got = await store_db.since(mark)
            check(
                res.requests <= got["stored"] <= res.requests + connections,
                f"{h.case.name}: {got['stored']} pushes stored for {res.requests} answered",
            )
            check(got["outbox"] == got["stored"], f"{h.case.name}: {got['outbox']} outbox rows for {got['stored']}")
            stats.setdefault(h.case.name, []).append(
                {**got, "outbox_pending_at_end": pending, "drain_s": round(drain_s, 2)}
            )

        for _ in range(ROUNDS):
            await floor.measure(stack, meter, bare_url, work / "warm.txt", connections=CONNECTIONS, seconds=seconds)
            await push_round(bare_store, bare_url, bare_store_db, prefix="/bare-store")
            await push_round(single, gateway, db)
            await push_round(grouped, gateway_gc, db)

        best = max((single, grouped), key=lambda h: h.case.rate)
        steady = HttpCase(
            run.new_case(
                f"{best.case.name} @ {STEADY_SHARE:.0%} of its peak (constant rate)",
                group="steady",
                unit="pushes/s",
                compare_to=[best.case.name],
                latency_of="push, wrk",
            ),
            best.server,
        )
        target = STEADY_SHARE * best.case.rate
        await push_round(
            steady, stack.url(best.server), db, rate=target, run_seconds=steady_seconds, connections=STEADY_CONNECTIONS
        )
        achieved = steady.case.n / steady.case.seconds
        if achieved < 0.9 * target:
            run.facts["the constant-rate run fell short of its rate"] = f"{achieved:.0f}/s of {target:.0f}/s"

        split = await cost_split(run, pushes, stack.databases["gateway"])

        for h in (floor, bare_store, single, grouped, steady):
            h.finish()
            if h.case.name in stats:
                h.case.extra["database"] = stats[h.case.name]
        steady.case.extra["target_rate"] = round(target, 1)
        for c in (floor.case, bare_store.case, single.case, grouped.case, steady.case, *split):
            run.record(c)
        p99_steady = (steady.case.latency_summary or {}).get("p99_ms", math.inf)
        run.facts["targets (data-path issue)"] = {
            f"{h.case.name} / no-op floor": f"{h.case.rate / floor.case.rate:.3f} (target >= {TARGET_RATIO}): "
            + ("met" if h.case.rate / floor.case.rate >= TARGET_RATIO else "MISSED")
            for h in (single, grouped)
        } | {
            "p99 at 70% of its peak": f"{p99_steady:.1f} ms (target < {TARGET_P99_MS:.0f} ms): "
            + ("met" if p99_steady < TARGET_P99_MS else "MISSED"),
        }
        run.facts["gateway CPU per push / floor CPU per request"] = {
            h.case.name: round(h.case.cpu_us_per_op / floor.case.cpu_us_per_op, 2) for h in (single, grouped)
        }
        run.facts["wrk"] = (
            f"1 thread; peak cases {CONNECTIONS} connections, {seconds:g} s per round, {ROUNDS} rounds alternating; "
            f"constant rate {STEADY_CONNECTIONS} connections, {steady_seconds:g} s"
        )
        run.facts["wrk CPU, cores busy"] = {
            h.case.name: h.case.extra["wrk_cpu_cores_busy"] for h in (floor, bare_store, single, grouped, steady)
        }
        run.facts["push request body bytes (safe mode)"] = len(pushes.build(1)[0][1])
        run.facts["namespace"] = stack.namespace
        run.process_peak_rss_mb = stack.peak_rss()
