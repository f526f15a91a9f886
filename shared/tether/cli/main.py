"""`tether`: run the local stack and drive sessions from a terminal.

The client commands read TETHER_URL (default http://127.0.0.1:8080) and TETHER_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from tether.errors import TetherError


def _client(args: argparse.Namespace) -> Any:
    from tether.sdk import Client

    if not args.api_key:
        sys.exit("tether: set TETHER_API_KEY or pass --api-key (the key `tether up` printed)")
    return Client(args.url, args.api_key)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_up(args: argparse.Namespace) -> int:
    from tether.local.stack import LocalStack
    from tether.origin.guard import Limits
    from tether.origin.server import Origin
    from tether.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    print(f"Starting Tether (store={settings.store}, bus={settings.bus}, home={settings.home})")
    stack = LocalStack(settings)
    stack.start()
    isolation = stack.provisioner.isolation()
    print("Workspaces: " + ", ".join(f"{k}: {v}" for k, v in isolation.items()))

    def ready() -> None:
        made = stack.generated
        if made.api_key:
            print(f"\nAdmin API key (shown once; set TETHER_API_KEY to choose your own):\n"
                  f"  {made.api_key}\n")  # fmt: skip
        if made.admin_password:
            print(f"Password of user 'admin' (shown once; set TETHER_ADMIN_PASSWORD to choose):\n"
                  f"  {made.admin_password}\n")  # fmt: skip
        print(f"Tether is up on http://127.0.0.1:{settings.port}  "
              f"(agent {stack.agent.agent_id}, Ctrl-C to stop)", flush=True)  # fmt: skip

    try:
        origin = Origin(limits=Limits.of(settings))
        asyncio.run(origin.serve("127.0.0.1", settings.port, ready))
        print("Stopping Tether...", flush=True)
    except OSError as exc:
        print(f"tether: cannot serve on port {settings.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """First-start data in the configured store (the cloud's Firestore, say): templates, the
    `admin` user and its API key. Safe to run again: what exists is kept."""
    from tether import bootstrap
    from tether.settings import Settings

    settings = Settings.from_env()
    print(f"Seeding the {settings.store} store of project {settings.project}...", file=sys.stderr)
    services = bootstrap.build(settings)
    try:
        made = bootstrap.seed(services)
    finally:
        services.close()
    if made.api_key:
        print(f"Admin API key (shown once): {made.api_key}")
    if made.admin_password:
        print(f"Password of user 'admin' (shown once): {made.admin_password}")
    if not (made.api_key or made.admin_password):
        print("Already seeded: templates checked, credentials unchanged.", file=sys.stderr)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    client = _client(args)
    started = time.monotonic()
    print(f"Creating a '{args.template}' session...", file=sys.stderr, flush=True)
    session = client.create_session(
        template=args.template,
        provider=args.provider,
        namespace=args.namespace,
        user=args.user,
        ttl_minutes=args.ttl,
        long_lived=args.long_lived,
    )
    took = time.monotonic() - started
    print(f"Session {session['id']} is {session['status']} ({took:.1f}s)", file=sys.stderr)
    _print(session)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    sessions = _client(args).list_sessions(args.namespace, args.user)
    if not sessions:
        print("No sessions.", file=sys.stderr)
    for s in sessions:
        print(f"{s['id']}\t{s['status']}\t{s['provider']}\t{s['template']}\t{s['expires_at']}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    _print(_client(args).get_session(args.session_id))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    result = _client(args).execute_session(args.session_id, " ".join(args.command), args.timeout)
    sys.stdout.write(result["stdout"])
    sys.stderr.write(result["stderr"])
    return int(result["returncode"])


def cmd_delete(args: argparse.Namespace) -> int:
    session = _client(args).delete_session(args.session_id)
    print(f"Session {session['id']} is {session['status']}", file=sys.stderr)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    from tether.cli.terminal import run_terminal

    if not args.api_key:
        sys.exit("tether: set TETHER_API_KEY or pass --api-key (the key `tether up` printed)")
    return run_terminal(args.url, args.api_key, args.session_id)


def cmd_health(args: argparse.Namespace) -> int:
    from tether.sdk import Client

    report = Client(args.url).health()
    _print(report)
    return 0 if report.get("status") == "healthy" else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tether",
        description="Tether: remote sessions without servers to babysit.",
        epilog="Start with `tether up`, then `export TETHER_API_KEY=<printed key>` and "
        "`tether create`.",
    )
    p.add_argument("--url", default=os.environ.get("TETHER_URL", "http://127.0.0.1:8080"),
                   help="API base URL (env TETHER_URL)")  # fmt: skip
    p.add_argument("--api-key", default=os.environ.get("TETHER_API_KEY"),
                   help="API key (env TETHER_API_KEY)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="serve every API locally (SQLite store, local agent)").set_defaults(
        func=cmd_up
    )

    sub.add_parser(
        "seed",
        help="create templates and the admin user and key in the configured store (TETHER_STORE,"
        " GOOGLE_CLOUD_PROJECT): the first step after a cloud deploy",
    ).set_defaults(func=cmd_seed)

    c = sub.add_parser("create", help="create a session and wait until it runs")
    c.add_argument("--template", default="python", help="template name (default: python)")
    c.add_argument("--provider", default="auto", help="auto|cloud_run|gke|workstations")
    c.add_argument("--namespace", default="default", help="grouping label")
    c.add_argument("--user", default="default", help="user label")
    c.add_argument("--ttl", type=int, default=None, help="minutes until the session expires")
    c.add_argument("--long-lived", action="store_true", help="never expire")
    c.set_defaults(func=cmd_create)

    ls = sub.add_parser("list", help="list your sessions")
    ls.add_argument("--namespace")
    ls.add_argument("--user")
    ls.set_defaults(func=cmd_list)

    g = sub.add_parser("get", help="show one session")
    g.add_argument("session_id")
    g.set_defaults(func=cmd_get)

    e = sub.add_parser("exec", help="run a command in a session; exits with its return code")
    e.add_argument("session_id")
    e.add_argument("command", nargs="+", help="the command line (quote it or put it after --)")
    e.add_argument("--timeout", type=float, default=120, help="seconds (default 120)")
    e.set_defaults(func=cmd_exec)

    sh = sub.add_parser("shell", help="open an interactive terminal in a session (exit to leave)")
    sh.add_argument("session_id")
    sh.set_defaults(func=cmd_shell)

    d = sub.add_parser("delete", help="terminate a session")
    d.add_argument("session_id")
    d.set_defaults(func=cmd_delete)

    sub.add_parser("health", help="show the server's health").set_defaults(func=cmd_health)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except TetherError as exc:
        print(f"tether: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tether: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
