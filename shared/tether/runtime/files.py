"""The workspace's files: list, stat, read, write, delete, make directories.

A relative path is under the home; an absolute one is taken as it is (the runtime runs as the
workspace's user, and may read what that user may). Entries are `lstat`'s: a link is reported as
a link. Content streams both ways in chunks, never whole in memory; an upload goes to a temp
file in the target's directory, renamed over the target once complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import heapq
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from io import FileIO

from aiohttp import web

from tether.runtime.activity import Activity
from tether.runtime.problems import problem

MAX_ENTRIES = 10_000
CHUNK = 256 << 10
MAX_BYTES = 1 << 30  # an upload's default bound
DROP_MOST = 16 << 20  # bytes of a refused upload read (and dropped) before the answer

# errno → (status, code); any other is a 409 FILE_ERROR
_ERRORS = {
    errno.ENOENT: (404, "FILE_NOT_FOUND"),
    errno.ENOTDIR: (400, "NOT_A_DIRECTORY"),
    errno.EISDIR: (400, "NOT_A_FILE"),
    errno.EACCES: (403, "PERMISSION_DENIED"),
    errno.EPERM: (403, "PERMISSION_DENIED"),
    errno.EROFS: (403, "PERMISSION_DENIED"),
    errno.EEXIST: (409, "FILE_EXISTS"),
    errno.ENOTEMPTY: (409, "DIRECTORY_NOT_EMPTY"),
    errno.EBUSY: (409, "FILE_BUSY"),
    errno.ENOSPC: (507, "NO_SPACE"),
    errno.EDQUOT: (507, "NO_SPACE"),
    errno.EFBIG: (413, "FILE_TOO_LARGE"),
    errno.ENAMETOOLONG: (400, "INVALID_PATH"),
    errno.ELOOP: (400, "INVALID_PATH"),
    errno.EINVAL: (400, "INVALID_PATH"),
}


class _Refused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.answer = problem(status, code, detail)


def _text(name: str) -> str:
    """A name as JSON can carry it (a name that is not UTF-8 gets U+FFFD for its bad bytes)."""
    return os.fsencode(name).decode("utf-8", errors="replace")


def _iso(seconds: float) -> str:
    when = datetime.fromtimestamp(seconds, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(path: str, st: os.stat_result) -> dict[str, object]:
    mode = st.st_mode
    kind = (
        "symlink"
        if stat.S_ISLNK(mode)
        else "dir"
        if stat.S_ISDIR(mode)
        else "file"
        if stat.S_ISREG(mode)
        else "other"
    )
    return {
        "name": _text(os.path.basename(path) or path),
        "path": _text(path),
        "type": kind,
        "size": st.st_size,
        "mode": f"{stat.S_IMODE(mode):04o}",
        "modified": _iso(st.st_mtime),
    }


def _oserror(exc: OSError, path: str) -> web.Response:
    status, code = _ERRORS.get(exc.errno or 0, (409, "FILE_ERROR"))
    return problem(status, code, f"path: {exc.strerror or exc}: {_text(path)}")


class Files:
    def __init__(self, home: str, activity: Activity, max_bytes: int = MAX_BYTES) -> None:
        self.home, self.activity, self.max_bytes = home, activity, max_bytes

    def _path(self, request: web.Request) -> str:
        self.activity.note("files")  # every call on the files is activity
        raw = request.query.get("path")
        if not raw or "\x00" in raw:
            raise _Refused(400, "INVALID_PATH", "path: required, a non-empty path without NUL")
        return os.path.normpath(os.path.join(self.home, raw))

    async def _answer(
        self, request: web.Request, work: Callable[[str], object], status: int = 200
    ) -> web.Response:
        path = ""
        try:
            path = self._path(request)
            result = await asyncio.get_running_loop().run_in_executor(None, work, path)
        except _Refused as refused:
            return refused.answer
        except OSError as exc:
            return _oserror(exc, path)
        return web.json_response(result, status=status)

    async def list(self, request: web.Request) -> web.Response:
        def work(path: str) -> dict[str, object]:
            with os.scandir(path) as entries:  # only the first names kept, however many
                first = heapq.nsmallest(MAX_ENTRIES + 1, entries, key=lambda e: e.name)
            found = []
            for item in first[:MAX_ENTRIES]:
                with contextlib.suppress(FileNotFoundError):  # removed since
                    found.append(_entry(item.path, item.stat(follow_symlinks=False)))
            return {
                "path": _text(path),
                "entries": found,
                "truncated": len(first) > MAX_ENTRIES,
            }

        return await self._answer(request, work)

    async def stat(self, request: web.Request) -> web.Response:
        return await self._answer(request, lambda path: _entry(path, os.lstat(path)))

    async def mkdir(self, request: web.Request) -> web.Response:
        def work(path: str) -> dict[str, object]:
            os.makedirs(path, exist_ok=True)
            return _entry(path, os.lstat(path))

        return await self._answer(request, work, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        recursive = request.query.get("recursive", "false").lower() in ("true", "1", "yes")

        def work(path: str) -> dict[str, object]:
            if stat.S_ISDIR(os.lstat(path).st_mode):  # a link to a directory is unlinked
                if recursive:
                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                os.unlink(path)
            return {"deleted": _text(path)}

        return await self._answer(request, work)

    async def read(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        path = ""
        try:
            path = self._path(request)
            fd, size = await loop.run_in_executor(None, _open_regular, path)
        except _Refused as refused:
            return refused.answer
        except OSError as exc:
            return _oserror(exc, path)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = size
            await response.prepare(request)
            left = size
            while left > 0:  # a file that shrinks meanwhile ends the answer short
                chunk = await loop.run_in_executor(None, os.read, fd, min(CHUNK, left))
                if not chunk:
                    break
                self.activity.note("files")  # a long download is activity while it lasts
                await response.write(chunk)
                left -= len(chunk)
            return response
        finally:
            os.close(fd)

    async def write(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        path, temp = "", None
        try:
            path = self._path(request)
            if request.content_length is not None and request.content_length > self.max_bytes:
                raise _Refused(413, "FILE_TOO_LARGE", f"body: more than {self.max_bytes} bytes")
            fd, temp = await loop.run_in_executor(None, _temp_beside, path)
            digest, size = hashlib.sha256(), 0
            with open(fd, "wb", buffering=0) as out:
                async for chunk in request.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    self.activity.note("files")
                    if size > self.max_bytes:
                        raise _Refused(
                            413, "FILE_TOO_LARGE", f"body: more than {self.max_bytes} bytes"
                        )
                    await loop.run_in_executor(None, _write_all, out, digest, chunk)
                await loop.run_in_executor(None, _finish, out.fileno(), temp, path)
            temp = None
        except (_Refused, OSError) as exc:  # OSError: the client leaving mid-way included
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            answer = exc.answer if isinstance(exc, _Refused) else _oserror(exc, path)
            if not await _drop_rest(request):
                answer.force_close()
            return answer
        return web.json_response(
            {"path": _text(path), "size": size, "sha256": digest.hexdigest()}, status=201
        )


async def _drop_rest(request: web.Request, most: int = DROP_MOST, within: float = 5) -> bool:
    """Reads what a refused upload still sends, and drops it (up to a bound), so a client that
    sends its whole body before it reads gets the answer; False if the body goes on past it,
    and the connection is to be closed. (aiohttp's own lingering read waits its full 10 s when
    the client closes meanwhile.)"""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(within):
            while most > 0 and not request.content.is_eof():
                most -= len(await request.content.readany())
    return request.content.is_eof()


def _open_regular(path: str) -> tuple[int, int]:
    # O_NONBLOCK: a FIFO planted at the path must not hang the open
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(400, "NOT_A_FILE", f"path: not a regular file: {_text(path)}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _temp_beside(path: str) -> tuple[int, str]:
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkstemp(dir=parent, prefix=".tether-upload-")


def _write_all(out: FileIO, digest: hashlib._Hash, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[out.write(view) :]
    digest.update(chunk)


def _finish(fd: int, temp: str, path: str) -> None:
    try:  # a file replaced keeps its mode; a new one gets the usual 0644 (mkstemp's is 0600)
        st = os.stat(path)
        mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o644
    except OSError:
        mode = 0o644
    os.fchmod(fd, mode)
    os.rename(temp, path)


def setup(
    app: web.Application, home: str, max_bytes: int = MAX_BYTES, activity: Activity | None = None
) -> None:
    files = Files(home, activity or Activity(), max_bytes)
    app.router.add_get("/files", files.list)
    app.router.add_delete("/files", files.delete)
    app.router.add_get("/files/stat", files.stat)
    app.router.add_get("/files/content", files.read)
    app.router.add_put("/files/content", files.write)
    app.router.add_post("/files/mkdir", files.mkdir)
