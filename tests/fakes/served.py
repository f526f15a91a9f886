"""A function target (functions/main.py) served over HTTP on a free loopback port, as Cloud
Functions serves it: through functions-framework's own app."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import functions_framework
from werkzeug.serving import BaseWSGIServer, make_server

ROOT = Path(__file__).resolve().parents[2]


class ServedTarget:
    def __init__(self, name: str, on_status: Callable[[str], None] | None = None) -> None:
        app = functions_framework.create_app(name, str(ROOT / "functions" / "main.py"))

        def wsgi(environ: dict[str, Any], start: Any) -> Any:
            def started(status: str, *rest: Any) -> Any:
                if on_status is not None:
                    on_status(status)
                return start(status, *rest)

            return app(environ, started)

        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
