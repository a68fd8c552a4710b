"""Siyu's operator command: set-up, migrations, topology, dead letters and the outbox.

python -m tools.siyuctl check                      # are PostgreSQL and RabbitMQ reachable?
python -m tools.siyuctl migrate [service ...]      # create databases, run Alembic to head
python -m tools.siyuctl revision SERVICE -m MSG    # autogenerate a migration
python -m tools.siyuctl topology                   # declare exchanges and every service's queues
python -m tools.siyuctl outbox                     # per service: pending, failing, parked, unroutable, oldest pending
python -m tools.siyuctl outbox parked [SERVICE]    # rows given up on after max attempts: id, type, attempts, error
python -m tools.siyuctl outbox retry SERVICE (--id N [--id N ...] | --all)   # parked rows back to pending
python -m tools.siyuctl dlq list [SERVICE]         # dead letters: count and a summary of each
python -m tools.siyuctl dlq show SERVICE N         # the N-th dead letter in full
python -m tools.siyuctl dlq redrive SERVICE [--limit N] [--type T]   # back to the service's queue
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import asyncpg

from services.manifests import CONSUMERS, SERVICES
from shared.bus import ops
from shared.db import alembic_config, ensure_database, migrate
from shared.errors import SiyuError
from shared.settings import SiyuSettings, load_settings, service_settings_class


def _db_url(service: str) -> str:
    settings = load_settings(service_settings_class(service, SERVICES[service]))
    return settings.sqlalchemy_url


def _db_dsn(service: str) -> str:
    return load_settings(service_settings_class(service, SERVICES[service])).database_dsn


async def cmd_check(_: argparse.Namespace) -> int:
    s = load_settings(SiyuSettings)
    problems = await ops.check_infrastructure(s.postgres_dsn, s.amqp_url)
    for p in problems:
        print(f"siyu: {p}", file=sys.stderr)
    if not problems:
        print("PostgreSQL and RabbitMQ are reachable")
    return 1 if problems else 0


async def cmd_migrate(args: argparse.Namespace) -> int:
    unknown = set(args.services) - set(SERVICES)
    if unknown:
        print(f"siyu: unknown service(s) {', '.join(sorted(unknown))}; known: {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    for service in args.services or list(SERVICES):
        await migrate(service, _db_url(service))
        print(f"{service}: migrated to head")
    return 0


async def cmd_revision(args: argparse.Namespace) -> int:
    from alembic import command

    url = _db_url(args.service)
    await ensure_database(url)
    await asyncio.to_thread(command.upgrade, alembic_config(args.service, url), "head")
    await asyncio.to_thread(command.revision, alembic_config(args.service, url), args.message, autogenerate=True)
    return 0


async def cmd_topology(_: argparse.Namespace) -> int:
    s = load_settings(SiyuSettings)
    await ops.declare_topology(s.amqp_url, s.amqp_namespace, CONSUMERS)
    for consumer, types in CONSUMERS.items():
        print(f"{consumer}: {len(types)} event types bound")
    return 0


async def cmd_outbox(args: argparse.Namespace) -> int:
    if args.action == "retry":
        if bool(args.ids) == args.all:
            print("siyu: say which parked rows to retry: --id N (repeatable) or --all", file=sys.stderr)
            return 2
        retried = await ops.outbox_retry(_db_dsn(args.service), None if args.all else args.ids)
        print(json.dumps({"service": args.service, "retried": retried}, indent=2))
        return 0
    services = [args.service] if getattr(args, "service", None) else list(SERVICES)
    result: list[dict[str, Any]] = []
    failed = False
    for service in services:
        try:
            if args.action == "parked":
                result.append({"service": service, "parked": await ops.outbox_parked(_db_dsn(service), args.limit)})
            else:
                result.append(await ops.outbox_backlog(service, _db_dsn(service)))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            failed = True
            result.append({"service": service, "error": f"database unreachable: {exc.__class__.__name__}: {exc}"})
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 1 if failed else 0


async def cmd_dlq(args: argparse.Namespace) -> int:
    s = load_settings(SiyuSettings)
    consumers = [args.service] if getattr(args, "service", None) else list(CONSUMERS)
    result: Any
    if args.action == "list":
        result = {c: await ops.dlq_list(s.amqp_url, s.amqp_namespace, c) for c in consumers}
    elif args.action == "show":
        result = await ops.dlq_show(s.amqp_url, s.amqp_namespace, args.service, args.index)
    else:
        moved = await ops.dlq_redrive(
            s.amqp_url, s.amqp_namespace, args.service, limit=args.limit, event_type=args.type
        )
        result = {"redriven": moved}
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siyuctl", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check").set_defaults(fn=cmd_check)
    p = sub.add_parser("migrate")
    p.add_argument("services", nargs="*", help=f"default: all of {', '.join(SERVICES)}")
    p.set_defaults(fn=cmd_migrate)
    p = sub.add_parser("revision")
    p.add_argument("service", choices=list(SERVICES))
    p.add_argument("-m", "--message", required=True)
    p.set_defaults(fn=cmd_revision)
    sub.add_parser("topology").set_defaults(fn=cmd_topology)
    outbox = sub.add_parser("outbox")
    outbox.set_defaults(fn=cmd_outbox, action=None)
    outbox_sub = outbox.add_subparsers(dest="action")
    p = outbox_sub.add_parser("parked")
    p.add_argument("service", nargs="?", choices=list(SERVICES))
    p.add_argument("--limit", type=int, default=100)
    p = outbox_sub.add_parser("retry")
    p.add_argument("service", choices=list(SERVICES))
    p.add_argument("--id", dest="ids", type=int, action="append", default=[], help="a parked row's id (repeatable)")
    p.add_argument("--all", action="store_true", help="every parked row of the service")
    dlq = sub.add_parser("dlq").add_subparsers(dest="action", required=True)
    p = dlq.add_parser("list")
    p.add_argument("service", nargs="?", choices=list(CONSUMERS))
    p.set_defaults(fn=cmd_dlq)
    p = dlq.add_parser("show")
    p.add_argument("service", choices=list(CONSUMERS))
    p.add_argument("index", type=int)
    p.set_defaults(fn=cmd_dlq)
    p = dlq.add_parser("redrive")
    p.add_argument("service", choices=list(CONSUMERS))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--type", default=None, help="only events of this type")
    p.set_defaults(fn=cmd_dlq)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(args.fn(args))
    except SiyuError as exc:
        print(f"siyu: {exc.detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
