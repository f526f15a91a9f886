"""What `tether up` runs besides its HTTP server (`tether.origin`): the embedded default
adapters, the local agent and the sweeper."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

from tether import bootstrap
from tether.agent import journal
from tether.agent.daemon import Agent
from tether.agent.journal import Journal
from tether.agent.kubectl import Kubectl
from tether.core.ports import Bus, Message, Store
from tether.provision.cluster import NoWorkspaces
from tether.provision.local import LocalProvisioner
from tether.service.commands import PENDING_KEPT
from tether.service.sweeper import purge_expired
from tether.settings import Settings
from tether.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


class LocalStack:
    """Everything `tether up` runs besides the HTTP server; usable from tests too."""

    def __init__(
        self,
        settings: Settings,
        sweep_interval: float = 2.0,
        store: Store | None = None,
        bus: Bus | None = None,
    ) -> None:
        settings = settings.local_stack()
        self.settings = settings
        self.services = bootstrap.build(settings, store, bus)
        bootstrap.install(self.services)
        self.generated = bootstrap.seed(self.services)
        self.provisioner = LocalProvisioner(
            settings.home, settings.sandbox, bootstrap.jwt_secret(settings), settings.warm_pool
        )
        self.services.health.workspaces = self.provisioner.isolation
        self.agent = Agent(
            settings.agent_id or f"local-{socket.gethostname()}",
            self.services.bus,
            self.provisioner,
            # Here only the sweeper republishes a command, and only a pending one (a day).
            Journal(SqliteStore(settings.home / "agent" / "journal.db"), keep=PENDING_KEPT),
            capacity=settings.agent_capacity,
            heartbeat_interval=settings.heartbeat_interval,
        )
        # A cluster agent for each Kubently cluster it is given (TETHER_CLUSTERS).
        self.cluster_agents = [self._cluster_agent(c, k) for c, k in settings.clusters.items()]
        self.sweep_interval = sweep_interval
        # The journal holds a day of commands: scanned for expired entries less often.
        self.journal_purge_interval = 60.0
        self._stop = threading.Event()

    def _cluster_agent(self, cluster_id: str, kubeconfig: str) -> Agent:
        home = self.settings.home / "clusters" / cluster_id
        kubectl = Kubectl(
            self.settings.kubectl,
            home / "kube-cache",
            Path(kubeconfig).expanduser() if kubeconfig else None,
        )
        journal_store = SqliteStore(home / "journal.db")
        return Agent(
            cluster_id,
            self.services.bus,
            NoWorkspaces(),
            Journal(journal_store, keep=PENDING_KEPT),
            heartbeat_interval=self.settings.heartbeat_interval,
            kubectl=kubectl,
        )

    def _on_event(self, msg: Message) -> None:
        self.services.events.handle(msg.data, msg.attributes)  # its trace, as in the cloud

    def _sweep(self) -> None:
        purged = time.monotonic()
        while not self._stop.wait(self.sweep_interval):
            try:
                self.services.sweeper.run()
                if time.monotonic() - purged >= self.journal_purge_interval:
                    # The agent's journal has no TTL policy here: the sweep purges it too.
                    for agent in (self.agent, *self.cluster_agents):
                        purge_expired(agent.journal.store, journal.EXPIRING)
                    purged = time.monotonic()
            except Exception:
                log.exception("sweeper run failed")

    def start(self) -> None:
        self._events = self.services.bus.subscribe_events("control-plane", self._on_event)
        for agent in (self.agent, *self.cluster_agents):
            agent.start()
            if not agent.registered.wait(30):
                raise RuntimeError(f"agent {agent.agent_id} did not register within 30s")
        threading.Thread(target=self._sweep, name="sweeper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for agent in (self.agent, *self.cluster_agents):
            agent.stop()
        self.provisioner.close()
        self._events.close()
        self.services.close()
