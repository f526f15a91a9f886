"""The runtime's error answers: `{"detail": "<one line naming the field>", "code": "<CODE>"}`
with the status, the shape the relay passes on to the client unchanged."""

from __future__ import annotations

from aiohttp import web


def problem(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"detail": detail, "code": code}, status=status)


def invalid(detail: str) -> web.Response:
    return problem(400, "VALIDATION_ERROR", detail)


async def json_object(request: web.Request) -> dict[str, object]:
    """The request's JSON object body (an empty body is `{}`); ValueError names what is wrong."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise ValueError(f"body: larger than {request.client_max_size} bytes") from None
    except ValueError:
        raise ValueError("body: must be JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    return body
