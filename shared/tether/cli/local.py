"""Commands that run Tether itself rather than talk to it: up, reset-admin, seed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys

import click

from tether.cli import exits


@click.command(short_help="serve every API locally (SQLite store, local agent)")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="serving processes sharing the port (env TETHER_WORKERS, 1)",
)
def up(workers: int | None) -> int:
    """Serve every API locally (SQLite store, local agent) on TETHER_PORT (8080). The first
    start prints the admin's API key and password, once."""
    from tether import logs, tracing
    from tether.local.stack import LocalStack
    from tether.origin.guard import Limits
    from tether.origin.server import Origin
    from tether.settings import Settings

    logs.configure()
    settings = Settings.from_env()
    tracing.configure(settings, service="tether-local")
    workers = workers or settings.workers
    if workers < 1:
        click.echo("tether: TETHER_WORKERS must be at least 1", err=True)
        return exits.USAGE
    if workers > 1 and settings.bus == "local":  # the processes share a bus: a SQLite file
        settings = dataclasses.replace(settings, bus="sqlite")
    busy = _port_taken(settings.port)
    if busy:  # before anything is seeded: first-start credentials are shown only once
        click.echo(
            f"tether: port {settings.port} is taken ({busy}); stop what serves it "
            "(another `tether up`?) or choose another with TETHER_PORT",
            err=True,
        )
        return exits.FAILED
    print(f"Starting Tether (store={settings.store}, bus={settings.bus}, home={settings.home})")
    stack = LocalStack(settings)
    stack.start()
    isolation = stack.provisioner.isolation()
    print("Workspaces: " + ", ".join(f"{k}: {v}" for k, v in isolation.items()))

    def ready() -> None:
        made = stack.generated
        if made.api_key:
            print(
                f"\nAdmin API key (shown once; set TETHER_API_KEY to choose your own):\n"
                f"  {made.api_key}\n"
            )
        if made.admin_password:
            print(
                f"Password of user 'admin' (shown once; set TETHER_ADMIN_PASSWORD to choose):\n"
                f"  {made.admin_password}\n"
            )
        if not (made.api_key or settings.api_key):
            print(
                "Admin credentials were shown at the first start; lost them? "
                "`tether reset-admin` prints new ones."
            )
        print(
            f"Tether is up on http://127.0.0.1:{settings.port}  "
            f"(agent {stack.agent.agent_id}, Ctrl-C to stop)",
            flush=True,
        )

    # The other serving processes, once the first has made the store, the bus and the secrets.
    env = {
        **os.environ,
        "TETHER_BUS": settings.bus,
        "TETHER_PORT": str(settings.port),
        "TETHER_WORKER_OF": str(os.getpid()),
    }
    others = [
        subprocess.Popen([sys.executable, "-m", "tether.origin.worker"], env=env)
        for _ in range(workers - 1)
    ]
    try:
        origin = Origin(limits=Limits.of(settings))
        asyncio.run(origin.serve("127.0.0.1", settings.port, ready, shared=workers > 1))
        print("Stopping Tether...", flush=True)
    except OSError as exc:
        click.echo(f"tether: cannot serve on port {settings.port}: {exc}", err=True)
        return exits.FAILED
    finally:
        for proc in others:
            proc.terminate()
        for proc in others:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.stop()
    return exits.OK


def _port_taken(port: int) -> str | None:
    """Why 127.0.0.1:`port` cannot be served, or None when it can."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@click.command(
    "reset-admin",
    short_help="new password and API key for user 'admin' (lost first-start credentials)",
)
def reset_admin() -> int:
    """Give user 'admin' a new password and API key, revoking its others (the store of
    TETHER_HOME, or TETHER_STORE's): for lost first-start credentials."""
    from tether import bootstrap
    from tether.settings import Settings

    services = bootstrap.build(Settings.from_env())
    try:
        made = bootstrap.reset_admin(services)
    finally:
        services.close()
    print(f"New admin API key (its earlier keys are revoked): {made.api_key}")
    print(f"New password of user 'admin': {made.admin_password}")
    return exits.OK


@click.command(short_help="first-start data in the configured store (after a cloud deploy)")
def seed() -> int:
    """Create templates and the admin user and key in the configured store (TETHER_STORE,
    GOOGLE_CLOUD_PROJECT): the first step after a cloud deploy. Safe to run again: what exists
    is kept."""
    from tether import bootstrap
    from tether.settings import Settings

    settings = Settings.from_env()
    click.echo(f"Seeding the {settings.store} store of project {settings.project}...", err=True)
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
        click.echo("Already seeded: templates checked, credentials unchanged.", err=True)
    return exits.OK


COMMANDS = [up, reset_admin, seed]
