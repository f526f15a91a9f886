"""`tether up`: serves every surface on one origin with the embedded default adapters."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp_wsgi.wsgi import WSGIHandler
from werkzeug.wrappers import Request

from tether import bootstrap
from tether.agent.daemon import Agent
from tether.agent.journal import Journal
from tether.core.ports import Bus, Message, Store
from tether.errors import NotFound
from tether.provision.local import LocalProvisioner
from tether.relay import app as relay
from tether.settings import Settings
from tether.store.sqlite import SqliteStore
from tether.surfaces.onmemos import render_error
from tether.targets import HTTP_TARGETS, target_for

log = logging.getLogger(__name__)


def front(threads: int = 64) -> web.Application:
    """The relay's aiohttp app: its WebSocket routes natively, every other path to the function
    targets through WSGI (each request on a worker thread, as many at once as `threads`: an
    exec holds its thread until the command ends). The relay service serves it alone; `tether
    up` hands it only the connections that are for the relay (`tether.local.server`)."""
    app = web.Application()
    executor = ThreadPoolExecutor(threads, thread_name_prefix="http")
    functions = WSGIHandler(wsgi_app, executor=executor)
    relay.add_routes(app, functions)
    app.router.add_route("*", "/{path_info:.*}", functions)

    async def stop_threads(_: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_threads)
    return app


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    request = Request(environ)
    name = target_for(request.path)
    if name is None:
        response = render_error(NotFound("Not Found"), 404)
    else:
        response = HTTP_TARGETS[name](request)
    return response(environ, start_response)


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
