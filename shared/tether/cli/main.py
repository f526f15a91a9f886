"""`tether`: run the local stack and drive sessions from a terminal.

The client commands read TETHER_URL (default http://127.0.0.1:8080) and TETHER_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import select
import shlex
import socket
import stat
import subprocess
import sys
import time
from typing import Any

from tether.errors import (
    Forbidden,
    Invalid,
    TetherError,
    Timeout,
    Unauthenticated,
    Unprocessable,
)


def _client(args: argparse.Namespace) -> Any:
    from tether.sdk import Client

    if not args.api_key:
        raise Unauthenticated("set TETHER_API_KEY or pass --api-key (the key `tether up` printed)")
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
    workers = args.workers or settings.workers
    if workers < 1:
        print("tether: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and settings.bus == "local":  # the processes share a bus: a SQLite file
        settings = dataclasses.replace(settings, bus="sqlite")
    busy = _port_taken(settings.port)
    if busy:  # before anything is seeded: first-start credentials are shown only once
        print(f"tether: port {settings.port} is taken ({busy}); stop what serves it (another "
              "`tether up`?) or choose another with TETHER_PORT", file=sys.stderr)  # fmt: skip
        return 1
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
        if not (made.api_key or settings.api_key):
            print("Admin credentials were shown at the first start; lost them? "
                  "`tether reset-admin` prints new ones.")  # fmt: skip
        print(f"Tether is up on http://127.0.0.1:{settings.port}  "
              f"(agent {stack.agent.agent_id}, Ctrl-C to stop)", flush=True)  # fmt: skip

    # The other serving processes, once the first has made the store, the bus and the secrets.
    env = {**os.environ, "TETHER_BUS": settings.bus, "TETHER_PORT": str(settings.port),
           "TETHER_WORKER_OF": str(os.getpid())}  # fmt: skip
    others = [subprocess.Popen([sys.executable, "-m", "tether.origin.worker"], env=env)
              for _ in range(workers - 1)]  # fmt: skip
    try:
        origin = Origin(limits=Limits.of(settings))
        asyncio.run(origin.serve("127.0.0.1", settings.port, ready, shared=workers > 1))
        print("Stopping Tether...", flush=True)
    except OSError as exc:
        print(f"tether: cannot serve on port {settings.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in others:
            proc.terminate()
        for proc in others:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.stop()
    return 0


def _port_taken(port: int) -> str | None:
    """Why 127.0.0.1:`port` cannot be served, or None when it can."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def cmd_reset_admin(args: argparse.Namespace) -> int:
    from tether import bootstrap
    from tether.settings import Settings

    settings = Settings.from_env()
    services = bootstrap.build(settings)
    try:
        made = bootstrap.reset_admin(services)
    finally:
        services.close()
    print(f"New admin API key (its earlier keys are revoked): {made.api_key}")
    print(f"New password of user 'admin': {made.admin_password}")
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
    from tether.sdk import calls

    client = _client(args)
    started = time.monotonic()
    spec = calls.session_spec(args.template, args.namespace, args.user, args.provider,
                              args.ttl, args.long_lived)  # fmt: skip
    key = calls.new_key()
    print(f"Creating a '{args.template}' session...", file=sys.stderr, flush=True)
    try:
        session = client.create_session(spec, idempotency_key=key)
    except KeyboardInterrupt:
        # The server goes on with a create it has received. The same request with the same
        # Idempotency-Key names what it made, so no session is left behind unnamed.
        print("\nInterrupted: asking which session was made (Ctrl-C again to leave)...",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            session = client.create_session(spec, idempotency_key=key)
        except KeyboardInterrupt:
            print("tether: left; `tether list` shows the session if it was made",
                  file=sys.stderr)  # fmt: skip
            return 130
        print(f"Session {session['id']} was made and is {session['status']}; "
              f"`tether delete {session['id']}` removes it", file=sys.stderr)  # fmt: skip
        _print(session)
        return 130
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


_NO_STDIN = ("exec sends no standard input to the command: put the data in the command or a "
             "file, or use `tether shell`")  # fmt: skip


def _piped() -> bool:
    """Whether data was piped in (a command runs with no standard input, so it would be lost).
    A pipe with nothing in it yet is not waited for: a caller's idle stdin must not hang us."""
    stdin = sys.stdin.fileno()
    mode = os.fstat(stdin).st_mode
    if stat.S_ISREG(mode):
        return os.fstat(stdin).st_size > 0
    return (stat.S_ISFIFO(mode) and bool(select.select([stdin], [], [], 0)[0])
            and bool(os.read(stdin, 1)))  # fmt: skip


def cmd_exec(args: argparse.Namespace) -> int:
    # One argument is a command line, as typed; several are argv, quoted for the shell.
    words = args.command
    line = words[0] if len(words) == 1 else shlex.join(words)
    env = dict(_assignment(item) for item in args.env)
    if _piped():
        raise Invalid(_NO_STDIN, field="stdin")
    result = _client(args).execute_session(
        args.session_id, line, args.timeout, env=env or None, cwd=args.cwd
    )
    sys.stdout.write(result["stdout"])
    sys.stderr.write(result["stderr"])
    if _piped():  # it came while the command ran, which never saw it: not silently
        raise Invalid("input piped in while the command ran was not sent to it: " + _NO_STDIN,
                      field="stdin")  # fmt: skip
    return int(result["returncode"])


def _assignment(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep:
        raise Invalid(f"--env takes NAME=VALUE, not {item!r}", field="env")
    return name, value


def cmd_delete(args: argparse.Namespace) -> int:
    session = _client(args).delete_session(args.session_id)
    print(f"Session {session['id']} is {session['status']}", file=sys.stderr)
    return 0


# `tether kubectl`'s own exit codes, as timeout(1) and env(1) have them (kubectl's are its own).
TIMED_OUT, FAILED, REFUSED = 124, 125, 126


def cmd_kubectl(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        result = client.kubectl(args.cluster, *args.args, namespace=args.namespace,
                                timeout=args.timeout, session_id=args.session, wait=0)  # fmt: skip
        if result.get("status") == "awaiting_approval":
            decided = _await_approval(client, result["operation_id"])
            if decided is None:
                return 130
            result = decided
    except Timeout as exc:
        if exc.details.get("code") != "TIMEOUT":
            raise
        sys.stdout.write(exc.details.get("output") or "")
        print(f"tether: {exc.message}", file=sys.stderr)
        return TIMED_OUT
    except (Unprocessable, Forbidden) as exc:
        if exc.details.get("code") not in ("COMMAND_FORBIDDEN", "DENIED"):
            raise
        print(f"tether: refused: {exc.message}", file=sys.stderr)
        return REFUSED
    sys.stdout.write(result.get("output") or "")
    sys.stderr.write(result.get("error") or "")
    code = result.get("exit_code")
    return int(code) if code is not None else 0 if result.get("success") else 1


def _await_approval(client: Any, operation_id: str) -> dict[str, Any] | None:
    """Wait, with a dot now and then, until an admin decides on a held command; Ctrl-C leaves
    it queued, names it, and returns None."""
    print(f"tether: operation {operation_id} waits for an admin's approval (Ctrl-C leaves it "
          "queued)", end="", file=sys.stderr, flush=True)  # fmt: skip

    def dot(_: object) -> None:
        print(".", end="", file=sys.stderr, flush=True)

    try:
        result: dict[str, Any] = client.kubectl_result(operation_id, wait=None, on_wait=dot)
    except KeyboardInterrupt:
        print(f"\ntether: left operation {operation_id} queued; `tether operation "
              f"{operation_id}` shows what becomes of it", file=sys.stderr)  # fmt: skip
        return None
    except BaseException:
        print(file=sys.stderr, flush=True)  # the line of dots ends before the error's
        raise
    print(file=sys.stderr, flush=True)
    return result


def cmd_operation(args: argparse.Namespace) -> int:
    _print(_client(args).operation(args.operation_id))
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    client = _client(args)
    found = client.clusters()
    if not found:
        print("No clusters.", file=sys.stderr)
    for cluster_id in found:
        c = client.cluster(cluster_id)
        print(f"{c['id']}\t{c['status']}\t{c['agent']}\t{c.get('lastSeen') or '-'}")
    return 0


def _kubectl_timeout(text: str) -> int:
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if not 1 <= seconds <= 30:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of seconds, 1 to 30")
    return seconds


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
    p.set_defaults(failure=1)  # the exit code of tether's own failures
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="serve every API locally (SQLite store, local agent)")
    up.add_argument("--workers", type=int, default=None, metavar="N",
                    help="serving processes sharing the port (env TETHER_WORKERS, 1)")  # fmt: skip
    up.set_defaults(func=cmd_up)

    sub.add_parser(
        "reset-admin",
        help="give user 'admin' a new password and API key, revoking its others (the store of "
        "TETHER_HOME, or TETHER_STORE's): for lost first-start credentials",
    ).set_defaults(func=cmd_reset_admin)

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

    e = sub.add_parser(
        "exec",
        help="run a command in a session; exits with its return code",
        description="Run a command in a session and exit with its return code. Several words "
        "after -- are the command's arguments, passed exactly (`tether exec ID -- python -c "
        "'print(6*7)'`); one word is a shell command line (`tether exec ID 'ls | wc -l'`). "
        "The command has no standard input: piping into it is refused.",
    )
    e.add_argument("session_id")
    e.add_argument("command", nargs="+", help="the command (after --) or one command line")
    e.add_argument("--timeout", type=float, default=120, help="seconds (default 120)")
    e.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable for the command (repeatable)")  # fmt: skip
    e.add_argument("--cwd", help="directory to run in (relative to the home, or absolute)")
    e.set_defaults(func=cmd_exec)

    sh = sub.add_parser("shell", help="open an interactive terminal in a session (exit to leave)")
    sh.add_argument("session_id")
    sh.set_defaults(func=cmd_shell)

    d = sub.add_parser("delete", help="terminate a session")
    d.add_argument("session_id")
    d.set_defaults(func=cmd_delete)

    k = sub.add_parser(
        "kubectl",
        help="run a read-only kubectl command on a Kubently cluster; exits with its code",
        usage="tether kubectl [-n NS] [--timeout S] [--session ID] CLUSTER -- ARGS...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Run kubectl on a cluster through Kubently's command policy and exit with kubectl's
exit code: its output goes to stdout, its errors to stderr. Read verbs only (get,
describe, logs, top, events, version, api-resources, api-versions, explain). The
arguments after -- are kubectl's, passed as a list, never through a shell. A command
the approval rules hold waits until an admin approves or denies it.""",
        epilog="""\
exit status:
  kubectl's own: 0, or 1 when it fails (a pod that is not there, say)
  2    usage error (this command's options)
  124  kubectl ran out of --timeout and was stopped (what it printed is shown), as timeout(1)
  125  tether could not run it: server unreachable, bad key, unknown cluster, rate limited
  126  refused: the policy does not run it (the message names the argument), or an admin
       denied it
  130  interrupted while waiting for an admin: the command stays queued; its operation id
       is printed (`tether operation ID` shows what became of it)

examples:
  tether clusters
  tether kubectl dev -- get pods -A
  tether kubectl dev -n kube-system --timeout 30 -- logs coredns-5d78c9869d-7hb2n --tail=20""",
    )
    k.add_argument("cluster", metavar="CLUSTER", help="cluster id (`tether clusters` lists them)")
    k.add_argument("args", nargs="+", metavar="ARGS",
                   help="kubectl's arguments, verb first, after --")  # fmt: skip
    k.add_argument("-n", "--namespace", default=None, metavar="NS",
                   help="namespace where the arguments name none (default: the server's, "
                   "'default')")  # fmt: skip
    k.add_argument("--timeout", type=_kubectl_timeout, default=10, metavar="S",
                   help="seconds kubectl may run, 1-30 (default 10)")  # fmt: skip
    k.add_argument("--session", metavar="ID", default=None,
                   help="a debug session to run it in (counted, and kept alive)")  # fmt: skip
    k.set_defaults(func=cmd_kubectl, failure=FAILED)

    sub.add_parser(
        "clusters", help="list the Kubently clusters: id, connected or not, agent, last seen"
    ).set_defaults(func=cmd_clusters)

    op = sub.add_parser("operation", help="show a Kubently operation (a queued kubectl command)")
    op.add_argument("operation_id")
    op.set_defaults(func=cmd_operation)

    sub.add_parser("health", help="show the server's health").set_defaults(func=cmd_health)
    return p


def main(argv: list[str] | None = None) -> int:
    import httpx

    args = parser().parse_args(argv)
    failure: int = args.failure
    try:
        code: int = args.func(args)
    except TetherError as exc:
        print(f"tether: {exc.message}", file=sys.stderr)
        return failure
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        print(f"tether: {args.url!r} is not an http(s) URL ({exc}); check TETHER_URL or --url",
              file=sys.stderr)  # fmt: skip
        return failure
    except (httpx.TransportError, OSError) as exc:
        print(f"tether: cannot reach {args.url}: {exc or type(exc).__name__}; is the server up "
              "(`tether up`), and TETHER_URL right?", file=sys.stderr)  # fmt: skip
        return failure
    except ValueError:  # a success that is not JSON: something else answers at that URL
        print(f"tether: {args.url} did not answer as Tether does; check TETHER_URL or --url",
              file=sys.stderr)  # fmt: skip
        return failure
    except KeyboardInterrupt:
        print("tether: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
