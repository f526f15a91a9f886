"""`python -m tether.agent`: an agent in the cloud, its platform from TETHER_PLATFORM.

`cloud_run` agents are Cloud Run services that Pub/Sub pushes commands to (on $PORT); the
others pull from their subscription: `gke` (a Deployment in the cluster, owning workspaces),
`cluster` (Kubently's: a Deployment with a read-only ServiceAccount that runs kubectl,
its agent id the cluster id, TETHER_AGENT_ID) and `desktop` (Openctrol's: the X display
$DISPLAY, streamed through the relay at TETHER_PUBLIC_URL with TETHER_API_KEY; it listens on
no port). Store and bus come
from the environment as for the functions (TETHER_STORE=firestore, TETHER_BUS=pubsub); the
journal lives in the store, so instances running side by side share it.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from aiohttp import web

from tether import bootstrap, logs, tracing
from tether.agent.daemon import Agent
from tether.agent.desktop import DesktopAgent, DesktopConfig
from tether.agent.journal import Journal
from tether.agent.kubectl import Kubectl
from tether.agent.push import make_app
from tether.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tether.agent", description=__doc__)
    parser.add_argument(
        "--transport",
        choices=("push", "pull"),
        help="how commands arrive (default: push on cloud_run, pull otherwise)",
    )
    args = parser.parse_args()
    logs.configure()
    settings = Settings.from_env()
    tracing.configure(settings, service="tether-agent")
    store = bootstrap.make_store(settings)
    agent_id = settings.agent_id or settings.platform.replace("_", "-")
    desktop = None
    if settings.platform == "desktop":
        desktop = DesktopAgent(agent_id, DesktopConfig.from_env(settings))
        desktop.start()
    agent = Agent(
        agent_id,
        bootstrap.make_bus(settings),
        bootstrap.make_provisioner(settings),
        Journal(store),
        region=settings.region,
        capacity=settings.agent_capacity,
        heartbeat_interval=settings.heartbeat_interval,
        kubectl=Kubectl(settings.kubectl, settings.home / "kube-cache")
        if settings.platform == "cluster"
        else None,
        desktop=desktop,
    )
    transport = args.transport or ("push" if settings.platform == "cloud_run" else "pull")
    print(f"Tether agent {agent.agent_id} ({settings.platform}, {transport})", flush=True)
    port = int(os.environ.get("PORT", "8080"))
    agent.start(pull=transport == "pull")
    try:  # serves until SIGTERM; a pulling agent answers only health probes
        if desktop is not None:  # a PC behind NAT: nothing to listen for
            until_terminated()
        else:
            web.run_app(make_app(agent, push=transport == "push"), port=port, print=None)
    finally:
        agent.stop()
        if desktop is not None:
            desktop.stop()


def until_terminated() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
