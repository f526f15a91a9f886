"""`tether port-forward`: a local port whose HTTP requests go to a port of the session's
workspace, through the API (`/v1/sessions/{id}/ports/{port}/...`, with the caller's key).

Each request is forwarded on its own, bodies streamed both ways, status and headers kept (less
the hop-by-hop ones). What it does not carry: WebSocket upgrades and any protocol that is not
HTTP (a database's wire protocol, say); `tether shell` or a preview link serve those better."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import click

from tether.cli import exits, output
from tether.cli.app import App, pass_app

if TYPE_CHECKING:
    from aiohttp import web

# RFC 9110's connection-specific fields, and what the forwarder sets itself.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
              "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length")
)  # fmt: skip
# Never passed on: the caller's credential is ours to send, not a page's to set.
STRIPPED = HOP_BY_HOP | {"x-api-key", "authorization", "cookie"}


def _ports(text: str) -> tuple[int, int]:
    """LOCAL:REMOTE (LOCAL 0: any free port), or one port for both."""
    local, sep, remote = text.partition(":")
    try:
        pair = (int(local), int(remote or "x")) if sep else (int(local), int(local))
    except ValueError:
        pair = (-1, -1)
    if not (0 <= pair[0] <= 65535 and 1 <= pair[1] <= 65535):
        raise click.BadParameter(f"{text!r}: LOCAL:REMOTE, two port numbers (or one for both)")
    return pair


@click.command(
    "port-forward",
    short_help="serve a session's HTTP port on a local port",
    epilog="Carries plain HTTP, one request at a time each way (bodies streamed); not "
    "WebSocket upgrades, nor protocols other than HTTP.",
)
@click.argument("session_id", metavar="SESSION")
@click.argument("ports", metavar="LOCAL:REMOTE")
@click.option("--address", default="127.0.0.1", show_default=True, help="local address to bind")
@pass_app
def port_forward(app: App, session_id: str, ports: str, address: str) -> int:
    """Listen on LOCAL (0: any free port) and forward each HTTP request to port REMOTE of the
    session's workspace, until Ctrl-C."""
    local, remote = _ports(ports)
    client = app.client()
    handle = client.connect(session_id)  # a session that is not there: said before listening
    conn = app.connection()
    assert conn.api_key is not None
    target = handle.get_url(remote)
    return asyncio.run(_serve(target, conn.api_key, address, local, session_id, remote))


async def _serve(target: str, key: str, address: str, port: int, sid: str, remote: int) -> int:
    import aiohttp  # here: every other command starts faster without it
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # No overall timeout: a long download or a slow stream is the page's business.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:

        async def forward(request: web.BaseRequest) -> web.StreamResponse:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in STRIPPED}
            headers["X-API-Key"] = key
            url = target + request.rel_url.raw_path_qs.lstrip("/")
            body = request.content if request.body_exists else None
            try:
                async with http.request(request.method, url, headers=headers, data=body,
                                        allow_redirects=False) as answer:  # fmt: skip
                    response = web.StreamResponse(status=answer.status, reason=answer.reason)
                    for k, v in answer.headers.items():
                        if k.lower() not in HOP_BY_HOP:
                            response.headers.add(k, v)
                    if answer.content_length is not None:
                        response.content_length = answer.content_length
                    await response.prepare(request)
                    async for chunk in answer.content.iter_chunked(1 << 16):
                        await response.write(chunk)
                    await response.write_eof()
                    return response
            except aiohttp.ClientError as exc:
                return web.Response(status=502, text=f"tether port-forward: {exc}\n")

        server = web.Server(forward)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, address, port)
        try:
            await site.start()
        except OSError as exc:
            click.echo(f"tether: cannot listen on {address}:{port}: {exc.strerror}", err=True)
            await runner.cleanup()
            return exits.FAILED
        bound = runner.addresses[0][1] if runner.addresses else port
        output.note(f"Forwarding http://{address}:{bound} -> {sid} port {remote} (Ctrl-C to stop)")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    output.note("Stopped forwarding.")
    return exits.OK


COMMANDS = [port_forward]
