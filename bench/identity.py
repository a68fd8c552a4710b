"""Identity's resolve paths, the full login and the gateway's ``/api/v1/me``, against bare SQL.

The stack runs as real processes (``bench/stack.py``): identity and the gateway as
``python -m services.<name>`` runs them, and the WeChat sandbox (``jscode2session`` for logins).
Own databases ``siyu_bench_identity_{identity,gateway}`` and broker namespace, dropped at the
end. ``wrk`` (one thread, ``CONNECTIONS`` connections) drives the HTTP cases; the baselines run
in this process with asyncpg at the same concurrency (``CONNECTIONS`` workers, pool of as many).

Groups (rounds alternate the cases of a group; n = seconds of load per case, split over the rounds):

``read``    bare indexed SELECT of an app identity by (appid, openid) *(baseline)* vs
            ``POST /internal/resolve`` for a known identity (the member view: member,
            identities, follows, phones, profile, tags).
``write``   bare INSERT of an app-identity row (same table shape and indexes) *(baseline)* vs
            ``POST /internal/identities`` with a new openid and unionid (resolve-or-create: person
            locks, look-ups, new member + profile + identity, rule tags, events to the outbox).
``login``   ``POST /api/v1/sessions`` through the gateway with a fresh ``wx.login`` code of a
            returning member: gateway (rate limits, idempotency scope) → identity ``/internal/logins``
            → sandbox ``/sns/jscode2session`` → resolve, seal the session_key, touch activity →
            gateway signs the session token. Compared with both bare baselines.
``me``      ``GET /internal/members/{id}`` straight to identity with the internal token *(baseline)*
            vs ``GET /api/v1/me`` through the gateway (token check, two rate-limit checks, identity's
            member view and commerce's tier and points asked at once, composing the answer) for the
            same members; commerce runs as its own process for this.

The gateway's rate limits (``GATEWAY_RATE_*_PER_MINUTE``) are raised to 10^8 per minute so that
no request is refused: every check still runs (one UPSERT each). wrk sends an
``X-Forwarded-For`` from a pool of loopback addresses (uvicorn trusts it from 127.0.0.1, as behind
a proxy), so the per-address buckets are spread as with real clients instead of one hot row.
Members for logins and ``/me`` come from the sandbox login flow (``POST /sandbox/users``,
``/login-code``, gateway ``POST /api/v1/sessions``).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
import uuid
from typing import Any

import asyncpg
import httpx

from bench import register
from bench.harness import Case, Run
from bench.stack import CpuMeter, HttpCase, Stack, write_requests
from shared.http import INTERNAL_TOKEN_HEADER
from shared.observability import configure_logging
from shared.settings import SiyuSettings, load_settings
from shared.wechat.apps import AppKind, load_apps

PORTS = {"gateway": 19200, "identity": 19201, "commerce": 19202, "sandbox": 19290}
UNUSED = {"notify": 19203}  # not started: these paths never call it
CONNECTIONS = 8  # wrk connections, and asyncpg workers of the baselines
ROUNDS = 2
USERS = 64  # sandbox users (returning members) whose logins are measured
ME_MEMBERS = 16  # members whose /me is read (tokens cycled)
FORWARDED_POOL = 256  # distinct client addresses (X-Forwarded-For, 127.1.x.y)
UNLIMITED = str(10**8)  # per minute: every rate-limit check runs, none refuses
POOL_HEADROOM = 3.0
TARGET_ME_RATIO = 0.75  # gateway overhead on /me at most 25 %
ME_FIXED_SHARE = 0.4  # the constant-rate /me pair: a rate both paths sustain on 2 cores
FIXED_CONNECTIONS = 16  # constant rate: connections only need to exceed rate x latency

SELECT_SQL = "SELECT id, member_id FROM app_identities WHERE appid = $1 AND openid = $2"
BARE_DDL = "CREATE TABLE bench_bare_identities (LIKE app_identities INCLUDING ALL)"
INSERT_SQL = (
    "INSERT INTO bench_bare_identities (member_id, appid, app_kind, openid, unionid, learned_via) "
    "VALUES ($1, $2, 'shop', $3, $4, 'shop_order')"
)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"benchmark invariant broken: {what}")


def forwarded(i: int) -> str:
    return f"127.1.{(i % FORWARDED_POOL) // 250}.{(i % FORWARDED_POOL) % 250 + 1}"


async def bare_case(
    case: Case, meter: CpuMeter, pool: asyncpg.Pool, sql: str, args: Any, seconds: float, start: int
) -> int:
    """``CONNECTIONS`` workers running ``sql`` for ``seconds`` (one timed round); returns the next index."""
    counter = [start]
    deadline = time.perf_counter() + seconds
    done = [0]

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = counter[0]
            counter[0] += 1
            t0 = time.perf_counter()
            await pool.execute(sql, *args(i))
            case.latencies.add(time.perf_counter() - t0)
            done[0] += 1

    before = await meter.snapshot()
    with case.timed():
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    spent = CpuMeter.delta(before, await meter.snapshot())
    pg = case.extra.setdefault("postgres_cpu_seconds", 0.0)
    case.extra["postgres_cpu_seconds"] = pg + spent["postgres"]
    case.n += done[0]
    return counter[0]


@register(
    "identity",
    n=6,
    quick_n=2,
    description="identity resolve (known/new), full login and gateway /me (wrk) vs bare asyncpg SELECT/INSERT",
)
async def bench(run: Run) -> None:
    configure_logging("bench", "WARNING")
    seconds = run.n / ROUNDS
    settings = load_settings(SiyuSettings)
    token = settings.internal_token_value
    internal = {INTERNAL_TOKEN_HEADER: token, "Content-Type": "application/json"}
    tag = secrets.token_hex(3)

    async with Stack("identity") as stack:
        await stack.create_database("identity")
        await stack.create_database("gateway")
        await stack.create_database("commerce")  # /me asks commerce for tier and points beside identity
        await stack.declare_topology()
        env = stack.env(
            {
                "SIYU_WECHAT_API_BASE": f"http://127.0.0.1:{PORTS['sandbox']}",
                "SIYU_GATEWAY_URL": f"http://127.0.0.1:{PORTS['gateway']}",
                "SANDBOX_PORT": str(PORTS["sandbox"]),
                "SANDBOX_LOG_LEVEL": "WARNING",
                "GATEWAY_PORT": str(PORTS["gateway"]),
                "IDENTITY_PORT": str(PORTS["identity"]),
                "GATEWAY_IDENTITY_URL": f"http://127.0.0.1:{PORTS['identity']}",
                "GATEWAY_COMMERCE_URL": f"http://127.0.0.1:{PORTS['commerce']}",
                "COMMERCE_PORT": str(PORTS["commerce"]),
                "COMMERCE_IDENTITY_URL": f"http://127.0.0.1:{PORTS['identity']}",
                "GATEWAY_NOTIFY_URL": f"http://127.0.0.1:{UNUSED['notify']}",
                "GATEWAY_RATE_IP_PER_MINUTE": UNLIMITED,
                "GATEWAY_RATE_LOGIN_IP_PER_MINUTE": UNLIMITED,
                "GATEWAY_RATE_MEMBER_PER_MINUTE": UNLIMITED,
                "GATEWAY_RATE_EVENTS_PER_MINUTE": UNLIMITED,
            }
        )
        stack.start("sandbox", "tools.wechat_sandbox", PORTS["sandbox"], env, ready_path="/health")
        stack.start("identity", "services.identity", PORTS["identity"], env)
        stack.start("commerce", "services.commerce", PORTS["commerce"], env)
        stack.start("gateway", "services.gateway", PORTS["gateway"], env)
        await stack.wait_ready()
        meter = CpuMeter(stack)
        work = stack.logdir
        gateway, identity, sandbox = stack.url("gateway"), stack.url("identity"), stack.url("sandbox")
        apps = load_apps(env["SIYU_WECHAT_APPS_FILE"])
        shop = apps.first(AppKind.SHOP).appid
        mp = apps.first(AppKind.MINI_PROGRAM).appid
        db = await asyncpg.create_pool(stack.databases["identity"], min_size=CONNECTIONS, max_size=CONNECTIONS)
        assert db is not None
        stack.closers.append(db.close)
        await db.execute(BARE_DDL)

        # --- new identities: their own file of distinct requests -------------------------------
        new_counter = [0]

        def write_new(path: Any, count: int) -> None:
            rows = []
            for _ in range(count):
                i = new_counter[0]
                new_counter[0] += 1
                body = {
                    "appid": shop,
                    "openid": f"oBn{tag}{i:09d}",
                    "unionid": f"uBn{tag}{i:09d}",
                    "source": "shop_order",
                }
                rows.append(("POST", "/internal/identities", internal, json.dumps(body, separators=(",", ":"))))
            write_requests(path, rows)

        async def count_shop() -> int:
            return int(await db.fetchval("SELECT count(*) FROM app_identities WHERE appid = $1", shop))

        # Warm-up (untimed) and the known identities: what the warm-up created.
        write_new(work / "warm-new.txt", 4_000)
        warm_new = await HttpCase(Case("warm-up new", "warm", "req/s"), "identity").measure(
            stack, meter, identity, work / "warm-new.txt", connections=CONNECTIONS, seconds=2.0, distinct=True
        )
        known = [r["openid"] for r in await db.fetch("SELECT openid FROM app_identities WHERE appid = $1", shop)]
        check(len(known) >= warm_new.requests, f"{len(known)} identities after {warm_new.requests} creations")
        write_requests(
            work / "known.txt",
            [
                ("POST", "/internal/resolve", internal, json.dumps({"appid": shop, "openid": o}, separators=(",", ":")))
                for o in known
            ],
        )
        warm_known = await HttpCase(Case("warm-up known", "warm", "req/s"), "identity").measure(
            stack, meter, identity, work / "known.txt", connections=CONNECTIONS, seconds=1.0
        )

        # --- members through the sandbox login flow ---------------------------------------------
        async with httpx.AsyncClient(timeout=30) as http:
            users = []
            for _ in range(USERS):
                r = await http.post(f"{sandbox}/sandbox/users", json={})
                r.raise_for_status()
                users.append(r.json()["user_id"])

            async def codes(count: int) -> list[str]:
                sem = asyncio.Semaphore(8)

                async def one(i: int) -> str:
                    async with sem:
                        r = await http.post(
                            f"{sandbox}/sandbox/users/{users[i % USERS]}/login-code", json={"appid": mp}
                        )
                        r.raise_for_status()
                        return str(r.json()["code"])

                return list(await asyncio.gather(*(one(i) for i in range(count))))

            sessions = []
            sem = asyncio.Semaphore(8)

            async def first_login(i: int, code: str) -> dict[str, Any]:
                async with sem:
                    r = await http.post(
                        f"{gateway}/api/v1/sessions", json={"code": code}, headers={"X-Forwarded-For": forwarded(i)}
                    )
                    check(r.status_code == 201, f"first login answered {r.status_code}: {r.text[:300]}")
                    return dict(r.json())

            first_codes = await codes(USERS)
            sessions = list(await asyncio.gather(*(first_login(i, c) for i, c in enumerate(first_codes))))
            members = {s["member_id"] for s in sessions}
            check(len(members) == USERS, f"{USERS} sandbox users became {len(members)} members")

            login_index = [0]

            async def write_logins(path: Any, count: int) -> None:
                rows = []
                for code in await codes(count):
                    i = login_index[0]
                    login_index[0] += 1
                    rows.append(
                        (
                            "POST",
                            "/api/v1/sessions",
                            {"Content-Type": "application/json", "X-Forwarded-For": forwarded(i)},
                            json.dumps({"code": code}),
                        )
                    )
                write_requests(path, rows)

            await write_logins(work / "warm-login.txt", 300)
            warm_login = await HttpCase(Case("warm-up login", "warm", "req/s"), "gateway").measure(
                stack, meter, gateway, work / "warm-login.txt", connections=CONNECTIONS, seconds=1.0, distinct=True
            )

            me = sessions[:ME_MEMBERS]
            write_requests(
                work / "me-gateway.txt",
                [
                    (
                        "GET",
                        "/api/v1/me",
                        {"Authorization": f"Bearer {s['token']}", "X-Forwarded-For": forwarded(i)},
                        "",
                    )
                    for i, s in enumerate(me)
                ],
            )
            write_requests(
                work / "me-direct.txt",
                [("GET", f"/internal/members/{s['member_id']}", {INTERNAL_TOKEN_HEADER: token}, "") for s in me],
            )
            await HttpCase(Case("warm-up me", "warm", "req/s"), "gateway").measure(
                stack, meter, gateway, work / "me-gateway.txt", connections=CONNECTIONS, seconds=1.0
            )
            await HttpCase(Case("warm-up me direct", "warm", "req/s"), "identity").measure(
                stack, meter, identity, work / "me-direct.txt", connections=CONNECTIONS, seconds=1.0
            )
            run.facts["warm-up rates (size the pools of distinct requests)"] = {
                "new identity": round(warm_new.rate),
                "known identity": round(warm_known.rate),
                "login": round(warm_login.rate),
            }

            # --- the cases ----------------------------------------------------------------------
            select = run.new_case(
                "bare indexed SELECT (asyncpg)", group="read", unit="ops/s", baseline=True, latency_of="query"
            )
            resolve = HttpCase(
                run.new_case(
                    "identity POST /internal/resolve, known identity",
                    group="read",
                    unit="req/s",
                    compare_to=[select.name],
                    latency_of="request, wrk",
                ),
                "identity",
            )
            insert = run.new_case(
                "bare INSERT (asyncpg, autocommit)", group="write", unit="ops/s", baseline=True, latency_of="query"
            )
            create = HttpCase(
                run.new_case(
                    "identity POST /internal/identities, new identity",
                    group="write",
                    unit="req/s",
                    compare_to=[insert.name],
                    latency_of="request, wrk",
                ),
                "identity",
            )
            login = HttpCase(
                run.new_case(
                    "full login: gateway POST /api/v1/sessions (returning member)",
                    group="login",
                    unit="logins/s",
                    compare_to=[select.name, insert.name],
                    latency_of="request, wrk",
                ),
                "gateway",
            )
            direct = HttpCase(
                run.new_case(
                    "identity GET /internal/members/{id} (direct)",
                    group="me",
                    unit="req/s",
                    baseline=True,
                    latency_of="request, wrk",
                ),
                "identity",
            )
            via_gateway = HttpCase(
                run.new_case(
                    "gateway GET /api/v1/me",
                    group="me",
                    unit="req/s",
                    compare_to=[direct.case.name],
                    latency_of="request, wrk",
                ),
                "gateway",
            )
            select_i, insert_i = 0, 0
            created = 0
            answered_new = 0
            mp_identities = int(await db.fetchval("SELECT count(*) FROM app_identities WHERE appid = $1", mp))
            for _ in range(ROUNDS):
                # read
                select_i = await bare_case(
                    select, meter, db, SELECT_SQL, lambda i: (shop, known[i % len(known)]), seconds, select_i
                )
                await resolve.measure(
                    stack, meter, identity, work / "known.txt", connections=CONNECTIONS, seconds=seconds
                )
                # write
                insert_i = await bare_case(
                    insert,
                    meter,
                    db,
                    INSERT_SQL,
                    lambda i: (uuid.uuid4(), shop, f"oBb{tag}{i:09d}", f"uBb{tag}{i:09d}"),
                    seconds,
                    insert_i,
                )
                before = await count_shop()
                write_new(work / "new.txt", math.ceil(max(warm_new.rate, 50) * seconds * POOL_HEADROOM) + 500)
                res = await create.measure(
                    stack, meter, identity, work / "new.txt", connections=CONNECTIONS, seconds=seconds, distinct=True
                )
                made = await count_shop() - before
                check(
                    res.requests <= made <= res.requests + CONNECTIONS,
                    f"{made} identities created for {res.requests} answered",
                )
                created += made
                answered_new += res.requests
                # login (codes issued just before: they are valid for 5 minutes)
                await write_logins(
                    work / "login.txt", math.ceil(max(warm_login.rate, 30) * seconds * POOL_HEADROOM) + 100
                )
                await login.measure(
                    stack, meter, gateway, work / "login.txt", connections=CONNECTIONS, seconds=seconds, distinct=True
                )
                # me
                await direct.measure(
                    stack, meter, identity, work / "me-direct.txt", connections=CONNECTIONS, seconds=seconds
                )
                await via_gateway.measure(
                    stack, meter, gateway, work / "me-gateway.txt", connections=CONNECTIONS, seconds=seconds
                )
            # The same calls at a constant rate both paths sustain: the latency the extra hop adds.
            short: dict[str, str] = {}
            fixed_rate = ME_FIXED_SHARE * direct.case.rate
            direct_fixed = HttpCase(
                run.new_case(
                    f"identity GET /internal/members/{{id}} @ {ME_FIXED_SHARE:.0%} of its peak",
                    group="me, constant rate",
                    unit="req/s",
                    baseline=True,
                    latency_of="request, wrk",
                ),
                "identity",
            )
            gateway_fixed = HttpCase(
                run.new_case(
                    "gateway GET /api/v1/me @ the same rate",
                    group="me, constant rate",
                    unit="req/s",
                    compare_to=[direct_fixed.case.name],
                    latency_of="request, wrk",
                ),
                "gateway",
            )
            for h, url, file in (
                (direct_fixed, identity, "me-direct.txt"),
                (gateway_fixed, gateway, "me-gateway.txt"),
            ):
                await h.measure(
                    stack, meter, url, work / file, connections=FIXED_CONNECTIONS, seconds=seconds, rate=fixed_rate
                )
                if h.case.rate < 0.9 * fixed_rate:  # not a broken invariant: the machine could not keep up
                    short[h.case.name] = f"{h.case.rate:.0f}/s of {fixed_rate:.0f}/s"
            now_mp = int(await db.fetchval("SELECT count(*) FROM app_identities WHERE appid = $1", mp))
            check(now_mp == mp_identities, f"returning logins created {now_mp - mp_identities} identities")
            bare_rows = int(await db.fetchval("SELECT count(*) FROM bench_bare_identities"))
            check(bare_rows == insert.n, f"{bare_rows} bare rows for {insert.n} INSERTs")

        for h in (resolve, create, login, direct, via_gateway, direct_fixed, gateway_fixed):
            h.finish()
        for c in (select, insert):
            c.extra["postgres_cpu_us_per_op"] = round(c.extra.pop("postgres_cpu_seconds") / c.n * 1e6) if c.n else None
        create.case.extra["identities_created"] = created
        ratio = via_gateway.case.rate / direct.case.rate
        lat_g, lat_d = via_gateway.case.latency_summary or {}, direct.case.latency_summary or {}
        run.facts["target: gateway /me overhead <= 25%"] = (
            f"throughput {ratio:.3f}x direct = {1 - ratio:.1%} overhead: "
            + ("met" if ratio >= TARGET_ME_RATIO else "MISSED")
            + f"; p50 {lat_g.get('p50_ms')} ms vs {lat_d.get('p50_ms')} ms direct at the same concurrency"
        )
        fg, fd = gateway_fixed.case.latency_summary or {}, direct_fixed.case.latency_summary or {}
        run.facts["/me latency added by the gateway at the same constant rate"] = {
            "rate": round(fixed_rate, 1),
            "p50_ms": f"{fd.get('p50_ms')} -> {fg.get('p50_ms')}",
            "p99_ms": f"{fd.get('p99_ms')} -> {fg.get('p99_ms')}",
        }
        gw_cpu = via_gateway.case.extra["cpu_us_per_request"]
        run.facts["/me CPU per request through the gateway, by process (µs)"] = gw_cpu
        run.facts["/me gateway CPU ÷ identity CPU per request"] = (
            round(gw_cpu.get("gateway", 0) / gw_cpu["identity"], 2) if gw_cpu.get("identity") else None
        )
        if short:
            run.facts["constant-rate runs that fell short of their rate (compare their latency with care)"] = short
        run.facts["gateway rate limits"] = f"GATEWAY_RATE_*_PER_MINUTE={UNLIMITED} (checks run, none refuses)"
        run.facts["concurrency"] = (
            f"{CONNECTIONS} wrk connections (1 thread) / {CONNECTIONS} asyncpg workers; {seconds:g} s per round, "
            f"{ROUNDS} rounds alternating"
        )
        run.facts["known identities cycled"] = len(known)
        run.facts["wrk CPU, cores busy (well under 1: wrk was not the bottleneck)"] = {
            h.case.name: h.case.extra["wrk_cpu_cores_busy"] for h in (resolve, create, login, direct, via_gateway)
        }
        run.facts["namespace"] = stack.namespace
        run.process_peak_rss_mb = stack.peak_rss()
        for c in (
            select,
            resolve.case,
            insert,
            create.case,
            login.case,
            direct.case,
            via_gateway.case,
            direct_fixed.case,
            gateway_fixed.case,
        ):
            run.record(c)
