"""One more serving process of `tether up --workers N`: the function targets and the relay on
the port the first process listens on too (the kernel shares connections out), on the store
and the bus it made. No agent and no sweeper here: those run in the first process only."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal

from tether import bootstrap, logs, tracing
from tether.origin.guard import Limits
from tether.origin.server import Origin
from tether.settings import Settings

_PR_SET_PDEATHSIG = 1
PARENT = "TETHER_WORKER_OF"  # the first process's pid, in a worker's environment


def _end_with_parent() -> None:
    """SIGTERM when the first process dies, however it dies: no orphan keeps the port."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get(PARENT):  # gone before that was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    _end_with_parent()
    logs.configure()
    settings = Settings.from_env().local_stack()  # a process of `tether up`
    tracing.configure(settings, service="tether-local")
    services = bootstrap.build(settings)
    bootstrap.install(services)
    try:
        origin = Origin(limits=Limits.of(settings))
        asyncio.run(origin.serve("127.0.0.1", settings.port, shared=True))
    finally:
        services.close()


if __name__ == "__main__":
    main()
