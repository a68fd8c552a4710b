"""The gateway's ``GET /api/v1/me`` against bare endpoints: what the proxy costs.

The member's page is identity's view and commerce's tier and points (asked at once) behind the
gateway's session token and rate limits. To see the gateway's own cost apart from the upstreams'
(``bench/identity.py`` measures identity), the upstreams here are ``bench/bare_app.py``'s
``GET /internal/members/{id}`` and ``GET /internal/members/{id}/points``: one indexed SELECT each,
answered as identity's member view and as commerce's points summary. Processes as ``python -m``
runs them (``bench/stack.py``): the gateway, the bare app; own databases (``siyu_bench_me_gateway`` for the gateway,
``siyu_bench_mebare_gateway`` holding ``bench_members`` for the bare app), dropped at the end.

Cases (rounds alternate; n = seconds of load per case, split over the rounds):

``bare /bare-me``                       FastAPI + asyncpg, one indexed SELECT per bearer of everything
                                        /me shows: the floor of a page that needs one read.
``upstream direct``                     the bare member view, called as the gateway calls it (one of
                                        the gateway's two upstream calls).
``gateway /api/v1/me``                  token check, one rate-limit statement (address + member),
                                        the two internal calls at once (keep-alive, pooled),
                                        composing the answer.
``... @ 40 %``                          both paths at a constant rate both sustain: the latency the hop adds.

The gateway's limits are raised so nothing is refused (every check still runs); wrk sends an
``X-Forwarded-For`` from a pool of loopback addresses (uvicorn believes it from 127.0.0.1), so the
address buckets are spread as with real clients.
"""

from __future__ import annotations

import math
import uuid

import asyncpg

from bench import register
from bench.harness import Case, Run
from bench.stack import CpuMeter, HttpCase, Stack, write_requests
from services.gateway.sessions.service import SessionTokens
from shared.http import INTERNAL_TOKEN_HEADER
from shared.observability import configure_logging
from shared.settings import DEV_SESSION_SECRET, SiyuSettings, load_settings
from shared.wechat.apps import AppKind, load_apps

PORTS = {"gateway": 19300, "bare": 19399}
UNUSED = {"notify": 19303}
CONNECTIONS = 8
FIXED_CONNECTIONS = 16
ROUNDS = 2
MEMBERS = 64  # members whose /me is read, tokens cycled (as the old identity bench did with 16)
FORWARDED_POOL = 256
UNLIMITED = str(10**8)
FIXED_SHARE = 0.4
TARGET_FLOOR_RATIO = 0.30  # gateway /me >= 0.30x the bare one-SELECT endpoint
TARGET_PROXY_RATIO = 0.75  # proxy overhead <= 25 %: gateway /me >= 0.75x the upstream called directly


def forwarded(i: int) -> str:
    return f"127.1.{(i % FORWARDED_POOL) // 250}.{(i % FORWARDED_POOL) % 250 + 1}"


@register(
    "gateway_me",
    n=6,
    quick_n=2,
    description="gateway GET /api/v1/me (wrk) vs a bare one-SELECT endpoint and the upstream called directly",
)
async def bench(run: Run) -> None:
    configure_logging("bench", "WARNING")
    seconds = run.n / ROUNDS
    token = load_settings(SiyuSettings).internal_token_value

    async with Stack("me") as stack, Stack("mebare") as bare_db:
        await stack.create_database("gateway")
        bare_dsn = await bare_db.create_database("gateway")  # any database will do: it gets its own table
        conn = await asyncpg.connect(bare_dsn)
        try:
            await conn.execute(
                "CREATE TABLE bench_members (id uuid PRIMARY KEY, unionid_known boolean NOT NULL, phone_masked text,"
                " tier text NOT NULL, available int NOT NULL, pending int NOT NULL)"
            )
            members = [uuid.uuid4() for _ in range(MEMBERS)]
            await conn.executemany(
                "INSERT INTO bench_members VALUES ($1, true, '138****0000', 'base', 1280, 40)", [(m,) for m in members]
            )
        finally:
            await conn.close()
        await stack.declare_topology()
        env = stack.env(
            {
                "GATEWAY_PORT": str(PORTS["gateway"]),
                "GATEWAY_IDENTITY_URL": f"http://127.0.0.1:{PORTS['bare']}",
                # /me asks identity's view and commerce's tier and points at once: both from the bare app.
                "GATEWAY_COMMERCE_URL": f"http://127.0.0.1:{PORTS['bare']}",
                "GATEWAY_NOTIFY_URL": f"http://127.0.0.1:{UNUSED['notify']}",
                "GATEWAY_RATE_IP_PER_MINUTE": UNLIMITED,
                "GATEWAY_RATE_LOGIN_IP_PER_MINUTE": UNLIMITED,
                "GATEWAY_RATE_MEMBER_PER_MINUTE": UNLIMITED,
                "GATEWAY_RATE_EVENTS_PER_MINUTE": UNLIMITED,
                "BARE_PORT": str(PORTS["bare"]),
                "BARE_ME_DATABASE_URL": bare_dsn,
            }
        )
        stack.start("bare", "bench.bare_app", PORTS["bare"], env, ready_path="/health")
        stack.start("gateway", "services.gateway", PORTS["gateway"], env)
        await stack.wait_ready()
        meter = CpuMeter(stack)
        work = stack.logdir
        gateway, bare = stack.url("gateway"), stack.url("bare")
        mp = load_apps(env["SIYU_WECHAT_APPS_FILE"]).first(AppKind.MINI_PROGRAM).appid
        tokens = SessionTokens(DEV_SESSION_SECRET, ttl=7200)
        write_requests(
            work / "me-gateway.txt",
            [
                (
                    "GET",
                    "/api/v1/me",
                    {"Authorization": f"Bearer {tokens.issue(m, mp).token}", "X-Forwarded-For": forwarded(i)},
                    "",
                )
                for i, m in enumerate(members)
            ],
        )
        write_requests(
            work / "me-direct.txt",
            [("GET", f"/internal/members/{m}", {INTERNAL_TOKEN_HEADER: token}, "") for m in members],
        )
        write_requests(
            work / "me-bare.txt", [("GET", "/bare-me", {"Authorization": f"Bearer {m}"}, "") for m in members]
        )
        for name, server, url, file in (
            ("warm gateway", "gateway", gateway, "me-gateway.txt"),
            ("warm direct", "bare", bare, "me-direct.txt"),
            ("warm bare", "bare", bare, "me-bare.txt"),
        ):
            await HttpCase(Case(name, "warm", "req/s"), server).measure(
                stack, meter, url, work / file, connections=CONNECTIONS, seconds=1.0
            )

        floor = HttpCase(
            run.new_case(
                "bare /bare-me (FastAPI + asyncpg, one indexed SELECT per bearer)",
                group="me",
                unit="req/s",
                baseline=True,
                latency_of="request, wrk",
            ),
            "bare",
        )
        direct = HttpCase(
            run.new_case(
                "upstream member view, called directly",
                group="me",
                unit="req/s",
                baseline=True,
                latency_of="request, wrk",
            ),
            "bare",
        )
        via = HttpCase(
            run.new_case(
                "gateway GET /api/v1/me",
                group="me",
                unit="req/s",
                compare_to=[floor.case.name, direct.case.name],
                latency_of="request, wrk",
            ),
            "gateway",
        )
        for _ in range(ROUNDS):
            for h, url, file in (
                (floor, bare, "me-bare.txt"),
                (direct, bare, "me-direct.txt"),
                (via, gateway, "me-gateway.txt"),
            ):
                await h.measure(stack, meter, url, work / file, connections=CONNECTIONS, seconds=seconds)

        fixed_rate = FIXED_SHARE * direct.case.rate
        direct_fixed = HttpCase(
            run.new_case(
                f"upstream direct @ {FIXED_SHARE:.0%} of its peak",
                group="me, constant rate",
                unit="req/s",
                baseline=True,
                latency_of="request, wrk",
            ),
            "bare",
        )
        via_fixed = HttpCase(
            run.new_case(
                "gateway /api/v1/me @ the same rate",
                group="me, constant rate",
                unit="req/s",
                compare_to=[direct_fixed.case.name],
                latency_of="request, wrk",
            ),
            "gateway",
        )
        for h, url, file in ((direct_fixed, bare, "me-direct.txt"), (via_fixed, gateway, "me-gateway.txt")):
            await h.measure(
                stack,
                meter,
                url,
                work / file,
                connections=FIXED_CONNECTIONS,
                seconds=float(max(2, round(seconds))),
                rate=fixed_rate,
            )

        cases = [floor, direct, via, direct_fixed, via_fixed]
        for h in cases:
            h.finish()
            run.record(h.case)
        floor_ratio = via.case.rate / floor.case.rate
        proxy_ratio = via.case.rate / direct.case.rate
        run.facts["targets (data-path issue)"] = {
            "gateway /me vs bare one-SELECT endpoint": f"{floor_ratio:.3f} (target >= {TARGET_FLOOR_RATIO}): "
            + ("met" if floor_ratio >= TARGET_FLOOR_RATIO else "MISSED"),
            "proxy overhead (1 - gateway/direct)": f"{(1 - proxy_ratio) * 100:.0f} % (target <= 25 %): "
            + ("met" if proxy_ratio >= TARGET_PROXY_RATIO else "MISSED"),
        }
        per_request = via.case.extra.get("cpu_us_per_request", {})
        run.facts["CPU per /me through the gateway, by process (µs)"] = per_request
        run.facts["gateway CPU per /me / upstream CPU per direct call"] = (
            round(via.case.cpu_us_per_op / direct.case.cpu_us_per_op, 2)
            if direct.case.cpu_us_per_op and not math.isnan(direct.case.cpu_us_per_op)
            else None
        )
        run.facts["wrk"] = (
            f"1 thread; peak {CONNECTIONS} connections, {seconds:g} s per round, {ROUNDS} rounds alternating; "
            f"constant rate {FIXED_CONNECTIONS} connections at {fixed_rate:.0f}/s"
        )
        run.process_peak_rss_mb = stack.peak_rss()
