"""One more serving process of `tether up --workers N`: the function targets and the relay on
the port the first process listens on too (the kernel shares connections out), on the store
and the bus it made. No agent and no sweeper here: those run in the first process only."""

from __future__ import annotations

import asyncio
import logging

from tether import bootstrap
from tether.origin.guard import Limits
from tether.origin.server import Origin
from tether.settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    services = bootstrap.build(settings)
    bootstrap.install(services)
    try:
        origin = Origin(limits=Limits.of(settings))
        asyncio.run(origin.serve("127.0.0.1", settings.port, shared=True))
    finally:
        services.close()


if __name__ == "__main__":
    main()
