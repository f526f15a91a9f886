"""`python -m tether.relay`: the relay as its own service (Cloud Run), listening on $PORT.

It is the origin without the local agent: the relay's WebSocket routes, and the few plain
requests that share their paths (a log read without `follow`) through the function targets
in-process. Adapters come from the environment, as for the functions (TETHER_STORE=firestore,
TETHER_BUS=pubsub in the cloud).
"""

from __future__ import annotations

import asyncio
import os

from tether import logs, tracing
from tether.origin.guard import Limits
from tether.origin.server import Origin
from tether.settings import Settings


def main() -> None:
    logs.configure()
    port = int(os.environ.get("PORT", "8080"))
    settings = Settings.from_env()
    tracing.configure(settings, service="tether-relay")

    def ready() -> None:
        print(f"Tether relay on port {port}", flush=True)

    origin = Origin(limits=Limits.of(settings))
    asyncio.run(origin.serve("0.0.0.0", port, ready))


if __name__ == "__main__":
    main()
