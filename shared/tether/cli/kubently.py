"""Kubently commands: kubectl on a cluster (with its own exit codes), clusters, operation."""

from __future__ import annotations

import sys
from typing import Any

import click

from tether.cli import output
from tether.cli.app import App, fail, pass_app
from tether.cli.output import output_option
from tether.errors import Forbidden, Timeout, Unprocessable

# `tether kubectl`'s own exit codes, as timeout(1) and env(1) have them (kubectl's are its own).
TIMED_OUT, FAILED, REFUSED = 124, 125, 126
INTERRUPTED = 130


class Seconds(click.ParamType[int, Any]):
    name = "S"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            seconds = int(value)
        except (TypeError, ValueError):
            seconds = 0
        if not 1 <= seconds <= 30:
            self.fail(f"{value!r}: a whole number of seconds, 1 to 30", param, ctx)
        return seconds


KUBECTL_HELP = """Run kubectl on a cluster through Kubently's command policy and exit with
kubectl's exit code: its output goes to stdout, its errors to stderr. Read verbs only (get,
describe, logs, top, events, version, api-resources, api-versions, explain). The arguments
after -- are kubectl's, passed as a list, never through a shell. A command the approval rules
hold waits until an admin approves or denies it."""

KUBECTL_EPILOG = """\b
exit status:
  kubectl's own: 0, or 1 when it fails (a pod that is not there, say)
  2    usage error (this command's options)
  124  kubectl ran out of --timeout and was stopped (what it printed is shown), as timeout(1)
  125  tether could not run it: server unreachable, bad key, unknown cluster, rate limited
  126  refused: the policy does not run it (the message names the argument), or an admin
       denied it
  130  interrupted while waiting for an admin: the command stays queued; its operation id
       is printed (`tether operation ID` shows what became of it)

\b
examples:
  tether clusters
  tether kubectl dev -- get pods -A
  tether kubectl dev -n kube-system --timeout 30 -- logs coredns-5d78c9869d-7hb2n --tail=20"""


@click.command(
    help=KUBECTL_HELP,
    epilog=KUBECTL_EPILOG,
    short_help="run a read-only kubectl command on a Kubently cluster",
)
@click.argument("cluster", metavar="CLUSTER")
@click.argument("args", nargs=-1, required=True, metavar="-- ARGS...", type=click.UNPROCESSED)
@click.option(
    "-n",
    "--namespace",
    default=None,
    metavar="NS",
    help="namespace where the arguments name none (default: the server's, 'default')",
)
@click.option(
    "--timeout",
    type=Seconds(),
    default=10,
    metavar="S",
    help="seconds kubectl may run, 1-30 (default 10)",
)
@click.option(
    "--session",
    metavar="ID",
    default=None,
    help="a debug session to run it in (counted, and kept alive)",
)
@pass_app
def kubectl(
    app: App,
    cluster: str,
    args: tuple[str, ...],
    namespace: str | None,
    timeout: int,
    session: str | None,
) -> int:
    try:
        return _kubectl(app, cluster, args, namespace, timeout, session)
    except KeyboardInterrupt:
        click.echo("tether: interrupted", err=True)
        return INTERRUPTED
    except Exception as exc:
        if fail(app, exc) is None:
            raise
        return FAILED  # whatever kept tether from running it


def _kubectl(
    app: App,
    cluster: str,
    args: tuple[str, ...],
    namespace: str | None,
    timeout: int,
    session: str | None,
) -> int:
    client = app.client()
    try:
        result = client.kubectl(
            cluster, *args, namespace=namespace, timeout=timeout, session_id=session, wait=0
        )
        if result.get("status") == "awaiting_approval":
            decided = _await_approval(client, result["operation_id"])
            if decided is None:
                return INTERRUPTED
            result = decided
    except Timeout as exc:
        if exc.details.get("code") != "TIMEOUT":
            raise
        sys.stdout.write(exc.details.get("output") or "")
        click.echo(f"tether: {exc.message}", err=True)
        return TIMED_OUT
    except (Unprocessable, Forbidden) as exc:
        if exc.details.get("code") not in ("COMMAND_FORBIDDEN", "DENIED"):
            raise
        click.echo(f"tether: refused: {exc.message}", err=True)
        return REFUSED
    sys.stdout.write(result.get("output") or "")
    sys.stderr.write(result.get("error") or "")
    code = result.get("exit_code")
    return int(code) if code is not None else 0 if result.get("success") else 1


def _await_approval(client: Any, operation_id: str) -> dict[str, Any] | None:
    """Wait, with a dot now and then, until an admin decides on a held command; Ctrl-C leaves
    it queued, names it, and returns None."""
    print(
        f"tether: operation {operation_id} waits for an admin's approval (Ctrl-C leaves it queued)",
        end="",
        file=sys.stderr,
        flush=True,
    )

    def dot(_: object) -> None:
        print(".", end="", file=sys.stderr, flush=True)

    try:
        result: dict[str, Any] = client.kubectl_result(operation_id, wait=None, on_wait=dot)
    except KeyboardInterrupt:
        print(
            f"\ntether: left operation {operation_id} queued; `tether operation "
            f"{operation_id}` shows what becomes of it",
            file=sys.stderr,
        )
        return None
    except BaseException:
        print(file=sys.stderr, flush=True)  # the line of dots ends before the error's
        raise
    print(file=sys.stderr, flush=True)
    return result


CLUSTER_COLUMNS = (
    ("id", "CLUSTER"),
    ("status", "STATUS"),
    ("agent", "AGENT"),
    ("lastSeen", "LAST SEEN"),
)


@click.command(short_help="list the Kubently clusters: id, connected or not, agent, last seen")
@output_option
@pass_app
def clusters(app: App, fmt: str | None) -> int:
    """List the Kubently clusters: id, connected or not, agent, last seen (piped:
    tab-separated)."""
    client = app.client()
    found = [client.cluster(cluster_id) for cluster_id in client.clusters()]
    output.rows(found, fmt, CLUSTER_COLUMNS, "No clusters.")
    return 0


@click.command(short_help="show a Kubently operation (a queued kubectl command)")
@click.argument("operation_id", metavar="OPERATION")
@output_option
@pass_app
def operation(app: App, operation_id: str, fmt: str | None) -> int:
    """Show a Kubently operation (a queued kubectl command)."""
    output.record(app.client().operation(operation_id), fmt, ("operation_id", "status", "command"))
    return 0


COMMANDS = [kubectl, clusters, operation]
