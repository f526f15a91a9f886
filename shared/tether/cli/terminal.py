"""`tether shell`: the local terminal, in raw mode, joined to a session's PTY through the relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import termios
import tty

import aiohttp

from tether.cli import exits


def _size() -> tuple[int, int]:
    """The terminal's real size (a stale COLUMNS/LINES in the environment must not win)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


async def _session(url: str, api_key: str, session_id: str) -> int:
    cols, rows = _size()
    ws_base = "ws" + url[4:] if url.startswith("http") else url
    endpoint = f"{ws_base.rstrip('/')}/v1/sessions/{session_id}/terminal?cols={cols}&rows={rows}"
    loop = asyncio.get_running_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    async with aiohttp.ClientSession() as http:
        try:
            # The key goes in a header: nothing secret in the URL.
            ws = await http.ws_connect(endpoint, headers={"X-API-Key": api_key}, heartbeat=30)
        except aiohttp.WSServerHandshakeError as exc:
            reasons = {401: ("the API key was refused", exits.AUTH),
                       403: ("the API key may not open it", exits.AUTH),
                       404: ("no such session", exits.NOT_FOUND),
                       409: ("the session is not running", exits.FAILED)}  # fmt: skip
            reason, code = reasons.get(exc.status, (f"HTTP {exc.status}", exits.FAILED))
            print(f"tether: cannot open a terminal: {reason}", file=sys.stderr)
            return code
        keys: asyncio.Queue[bytes] = asyncio.Queue()
        resizes: set[asyncio.Task[None]] = set()  # keeps resize sends alive until done

        typed = os.isatty(stdin)

        def on_key() -> None:
            data = os.read(stdin, 4096)
            if not data and typed:  # a terminal has no end to send: a ^D is typed as a key
                loop.remove_reader(stdin)
                return
            keys.put_nowait(data)

        # Keys wait for the shell's first output: a shell starting up may flush what came
        # before its prompt (piped input, a ^D for its end).
        prompted = asyncio.Event()

        async def send_keys() -> None:
            await prompted.wait()
            while True:
                data = await keys.get()
                if not data:  # end of piped input: ^D, as typed, and the shell's end ends us
                    await ws.send_bytes(b"\x04")
                    return
                await ws.send_bytes(data)

        def on_resize() -> None:
            c, r = _size()
            task = loop.create_task(
                ws.send_str(json.dumps({"type": "resize", "cols": c, "rows": r}))
            )
            resizes.add(task)
            task.add_done_callback(resizes.discard)

        try:
            loop.add_reader(stdin, on_key)
        except PermissionError:  # a file or /dev/null (no polling): read whole, never blocks
            keys.put_nowait(await loop.run_in_executor(None, os.read, stdin, 1 << 20))
            keys.put_nowait(b"")
        loop.add_signal_handler(signal.SIGWINCH, on_resize)
        sender = asyncio.ensure_future(send_keys())
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    os.write(stdout, msg.data)
                    prompted.set()
                elif msg.type is not aiohttp.WSMsgType.TEXT:
                    break
        finally:
            loop.remove_reader(stdin)
            loop.remove_signal_handler(signal.SIGWINCH)
            sender.cancel()
            await ws.close()
            print("\r\n[tether: terminal closed]", file=sys.stderr)  # \r: the mode is raw
    return 0


def run_terminal(url: str, api_key: str, session_id: str) -> int:
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    try:
        if saved is not None:
            tty.setraw(fd, termios.TCSANOW)  # every key, ^C too, goes to the remote shell; keep
            # what was typed before the connection opened (TCSAFLUSH would drop it)
        return asyncio.run(_session(url, api_key, session_id))
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
