"""`python -m tether.relay`: the relay as its own service (Cloud Run), listening on $PORT.

It is the local origin's front without the local agent: the WebSocket routes natively, and the
few plain requests that share their paths (a log read without `follow`) through the function
targets in-process. Adapters come from the environment, as for the functions
(TETHER_STORE=firestore, TETHER_BUS=pubsub in the cloud).
"""

from __future__ import annotations

import os

from aiohttp import web

from tether.local.origin import front


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    print(f"Tether relay on port {port}", flush=True)
    web.run_app(front(), host="0.0.0.0", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
