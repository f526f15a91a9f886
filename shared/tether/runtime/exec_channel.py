"""Exec as newline-delimited JSON on a Unix socket: the local agent's path for commands.

Each line in is an exec request (as for `POST /exec`), each line out its result, in order,
one connection per concurrent caller. It skips HTTP parsing on both ends, which is a good
part of the hop's cost for a short command. Errors come back as `{"detail": "..."}`.
"""

from __future__ import annotations

import asyncio
import json

from tether.runtime.execute import exec_request, run_command

MAX_REQUEST = 1 << 24  # bytes in one request line


async def serve(path: str, home: str) -> asyncio.AbstractServer:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(await _answer(line, home) + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):  # ValueError: a line over MAX_REQUEST
            pass
        except asyncio.CancelledError:  # the runtime is shutting down: end quietly
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(connection, path, limit=MAX_REQUEST)


async def _answer(line: bytes, home: str) -> bytes:
    try:
        command, timeout, cap = exec_request(json.loads(line))
    except ValueError as exc:
        return json.dumps({"detail": str(exc)}).encode()
    result = await run_command(command, home, timeout, cap=cap)
    return result.model_dump_json().encode()
