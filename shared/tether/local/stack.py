"""What `tether up` runs besides its HTTP server (`tether.origin`): the embedded default
adapters, the local agent and the sweeper."""

from __future__ import annotations

import logging
import socket
import threading

from tether import bootstrap
from tether.agent.daemon import Agent
from tether.agent.journal import Journal
from tether.core.ports import Bus, Message, Store
from tether.provision.local import LocalProvisioner
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
        self.settings = settings
        self.services = bootstrap.build(settings, store, bus)
        bootstrap.install(self.services)
        self.generated = bootstrap.seed(self.services)
        self.provisioner = LocalProvisioner(settings.home)
        self.agent = Agent(
            settings.agent_id or f"local-{socket.gethostname()}",
            self.services.bus,
            self.provisioner,
            Journal(SqliteStore(settings.home / "agent" / "journal.db")),
            heartbeat_interval=settings.heartbeat_interval,
        )
        self.sweep_interval = sweep_interval
        self._stop = threading.Event()

    def _on_event(self, msg: Message) -> None:
        self.services.events.handle(msg.data)

    def _sweep(self) -> None:
        while not self._stop.wait(self.sweep_interval):
            try:
                self.services.sweeper.run()
            except Exception:
                log.exception("sweeper run failed")

    def start(self) -> None:
        self._events = self.services.bus.subscribe_events("control-plane", self._on_event)
        self.agent.start()
        if not self.agent.registered.wait(30):
            raise RuntimeError("the local agent did not register within 30s")
        threading.Thread(target=self._sweep, name="sweeper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.agent.stop()
        self.provisioner.close()
        self._events.close()
        self.services.close()
