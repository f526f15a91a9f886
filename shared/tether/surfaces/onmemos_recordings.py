"""OnMemOS: recordings of a session's terminal (`tether.service.recordings`), as asciicast v2
files any asciinema player plays. Functions answer these; the relay records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.core import asciicast
from tether.service.recordings import Recording as Record
from tether.surfaces.http import json_response
from tether.surfaces.onmemos import principal, router

SESSION = "/v1/sessions/<session_id>/recordings"


class Terminal(BaseModel):
    id: str
    width: int = Field(description="Its columns when it was first recorded")
    height: int
    url: str = Field(description="Its cast alone (`?terminal=`), relative to the API")


class Recording(BaseModel):
    id: str
    session_id: str
    status: Literal["recording", "stopped", "failed"] = Field(
        description="failed: its storage failed (`error` says how); what was stored plays"
    )
    started_at: datetime
    stopped_at: datetime | None
    size: int = Field(description="Bytes of events stored so far")
    width: int | None = Field(description="The terminal's columns when it was first recorded")
    height: int | None
    error: str | None
    expires_at: datetime = Field(description="When it is deleted (TETHER_RECORDING_RETENTION)")
    url: str = Field(
        description="Its cast (application/x-asciicast), relative to the API: its terminals one "
        "at a time, the first and each opened after those before it closed"
    )
    terminals: list[Terminal] = Field(
        description="The terminals it recorded, in the order they opened; one open beside "
        "another plays at its own `url` only"
    )


class Recordings(BaseModel):
    recordings: list[Recording]
    next_cursor: str | None = Field(description="`cursor` for the page after this; null at the end")


class CastQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    terminal: str | None = Field(
        None, max_length=64, description="One of its `terminals`: that terminal's cast alone"
    )


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, max_length=1000, description="A page's `next_cursor`")


def shown(r: Record) -> Recording:
    url = f"/v1/sessions/{r.session_id}/recordings/{r.id}"
    return Recording(
        **r.model_dump(include={"id", "session_id", "status", "started_at", "stopped_at", "size",
                                "width", "height", "error"}),
        expires_at=r.purge_at,
        url=url,
        terminals=[Terminal(**t.model_dump(), url=f"{url}?terminal={t.id}") for t in r.terminals],
    )  # fmt: skip


@router.route(SESSION, ["POST"], answers={201: Recording}, errors=(404, 409), idempotent=True)
def start_recording(request: Request, session_id: str) -> Response:
    """Start recording the session's terminal: everything its terminals show from now on
    (409 while another recording of it is on). With an Idempotency-Key, a retry gets the
    first answer."""
    made = bootstrap.services().recordings.start(principal(request), session_id)
    return json_response(shown(made), 201)


@router.route(SESSION, ["GET"], query=ListQuery, answers={200: Recordings}, errors=(404,))
def list_recordings(request: Request, session_id: str, query: ListQuery) -> Response:
    """The session's recordings, newest first."""
    page = bootstrap.services().recordings.page(
        principal(request), session_id, query.limit, query.cursor
    )
    found = [shown(r) for r in page.items]
    return json_response(Recordings(recordings=found, next_cursor=page.next_cursor))


@router.route(f"{SESSION}/<recording_id>/stop", ["POST"], answers={200: Recording},
              errors=(404,))  # fmt: skip
def stop_recording(request: Request, session_id: str, recording_id: str) -> Response:
    """Stop a recording; answered once what the relays held is stored (a stopped one: as it
    is)."""
    stopped = bootstrap.services().recordings.stop(principal(request), session_id, recording_id)
    return json_response(shown(stopped))


@router.route(f"{SESSION}/<recording_id>", ["GET"], query=CastQuery, answers={200: None},
              media=asciicast.MEDIA_TYPE, errors=(404,))  # fmt: skip
def download_recording(
    request: Request, session_id: str, recording_id: str, query: CastQuery
) -> Response:
    """The recording as an asciicast v2 file (`asciinema play` it), streamed; one still
    recording gives what is stored so far. Its terminals play one at a time; `terminal`
    gives one of them alone (404 if it recorded no such terminal)."""
    recordings = bootstrap.services().recordings
    found = recordings.get(principal(request), session_id, recording_id)
    title = f"Tether session {found.session_id}"
    lines = recordings.cast(found, title=title, terminal=query.terminal)
    name = f"{found.id}.{query.terminal}.cast" if query.terminal else f"{found.id}.cast"
    return Response(
        lines,
        mimetype=asciicast.MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
