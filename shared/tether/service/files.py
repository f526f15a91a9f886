"""Files in a session's storage: OnMemOS's persistent-storage calls (`/v1/fs/persist/...`) put,
read and list files under `~/persist` in one of the caller's running sessions.

The files never pass through the host: each step is a short command run inside the workspace
(the exec every platform has), with the bytes in base64 on its command line or its output, so
the workspace's own confinement holds for it too. A path comes from the client and is checked
twice: here (relative, no `..`, no control characters) and in the workspace, where no part of
it may be a symbolic link (a workspace can plant one) — nothing outside `~/persist` is read or
written through a name the client sent.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import secrets
import shlex
from dataclasses import dataclass

from tether.core.models import ExecResult, Principal, Session
from tether.errors import Conflict, Invalid, NotFound, Timeout
from tether.service.sessions import Sessions

PERSIST = "persist"  # the directory, in the home, that holds them
MAX_FILE = 8 << 20  # bytes a file may have, either way
MAX_PATH = 1024
MAX_LISTED = 500
# A command line is at most 128 KiB and an output stream 256 KiB: chunks fit both in base64.
UP_CHUNK = 72 << 10
DOWN_CHUNK = 144 << 10
STEP_TIMEOUT = 60.0
UPLOADING = ".tether-upload-"  # a file being written; renamed to its name once whole

# Exit codes of the commands below.
LINK, MISSING, IS_DIR, NOT_DIR, NOT_FILE, TOO_BIG = 20, 21, 22, 23, 24, 25

# Starts every command (which starts in the home): `guard P` ends it with LINK when a part
# of P (relative to the home) that exists is a symbolic link.
GUARD = r"""set -u
guard() {
  local acc="" part parts
  IFS=/ read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    acc="${acc:+$acc/}$part"
    if [ -L "$acc" ]; then exit 20; fi
  done
}
"""


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to ~/persist
    size: int
    modified: float  # seconds since the epoch

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


def relative(path: str, field: str) -> str:
    """`path` as a file's place under ~/persist ("a/b.txt"); Invalid, naming `field`, when it
    is empty, absolute, leaves it (`..`), names a directory or holds a control character."""
    if not path or len(path) > MAX_PATH:
        raise Invalid(f"{field}: a file's path of 1 to {MAX_PATH} characters", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise Invalid(f"{field}: a path may not hold control characters", field=field)
    if path.startswith("/"):
        raise Invalid(
            f"{field}: {path!r} is absolute; give a path relative to the session's storage",
            field=field,
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Invalid(f"{field}: {path!r} leaves the session's storage ('..')", field=field)
    if not parts or path.endswith("/"):
        raise Invalid(f"{field}: {path!r} names a directory, not a file", field=field)
    if any(len(p.encode()) > 255 for p in parts):
        raise Invalid(f"{field}: a name in {path!r} is longer than 255 bytes", field=field)
    return "/".join(parts)


def _fail(result: ExecResult, rel: str, writing: bool) -> None:
    """Raise what a command's exit code means (nothing when it succeeded)."""
    if result.timed_out:
        raise Timeout(f"The session's storage did not answer within {STEP_TIMEOUT:g}s")
    code = result.returncode
    if code == 0:
        return
    if code == LINK:
        raise Invalid(
            f"'{rel}' goes through a symbolic link in the session's storage (never followed)",
            field="path",
        )
    if code == MISSING:
        raise NotFound(f"File '{rel}' not found in the session's storage")
    if code == IS_DIR:
        if writing:
            raise Conflict(f"'{rel}' already exists as a directory", field="path")
        raise Invalid(f"'{rel}' is a directory, not a file", field="path")
    if code == NOT_DIR:
        raise Conflict(f"A part of '{rel}' is a file, not a directory", field="path")
    if code == NOT_FILE:
        raise Invalid(f"'{rel}' is not a regular file", field="path")
    if code == TOO_BIG:
        raise Invalid(f"'{rel}' is larger than {MAX_FILE >> 20} MiB", field="path")
    said = (result.stderr.strip() or f"exit code {code}")[-300:]
    raise Conflict(f"The session's storage refused '{rel}': {said}", field="path")


@dataclass
class Files:
    sessions: Sessions

    def session_for(
        self,
        principal: Principal,
        namespace: str,
        user: str,
        session_id: str | None = None,
    ) -> Session:
        """The session whose storage the call means: `session_id` if given (it must carry
        that namespace and user), else the caller's newest running one that does."""
        if session_id:
            session = self.sessions.get(principal, session_id)
            if (session.namespace, session.user) == (namespace, user):
                return session
        else:
            mine = principal.id if principal.is_admin else None  # an admin's own too
            page = self.sessions.listed(principal, states=["running"], order_by="created_at",
                                        descending=True, limit=1, counted=False, owner=mine,
                                        namespace=namespace, user=user)  # fmt: skip
            if page.items:
                return page.items[0]
        raise NotFound(
            f"No running session of yours in namespace '{namespace}' for user '{user}': "
            "persisted files live in a running session's storage"
        )

    def _run(self, principal: Principal, session: Session, script: str) -> ExecResult:
        return self.sessions.execute(principal, session.id, GUARD + script, STEP_TIMEOUT)

    def upload(self, principal: Principal, session: Session, path: str, data: bytes) -> str:
        """Write `data` as ~/persist/`path` (whole, or not at all); returns the path."""
        rel = relative(path, "dst")
        if len(data) > MAX_FILE:
            raise Invalid(f"A file may have at most {MAX_FILE >> 20} MiB", field="file")
        target = f"{PERSIST}/{rel}"
        parent = posixpath.dirname(target)
        partial = f"{parent}/{UPLOADING}{secrets.token_hex(8)}"
        t, p, d = shlex.quote(target), shlex.quote(partial), shlex.quote(parent)
        chunks = [data[i : i + UP_CHUNK] for i in range(0, len(data), UP_CHUNK)] or [b""]
        try:
            for i, chunk in enumerate(chunks):
                encoded = shlex.quote(base64.b64encode(chunk).decode())
                if i == 0:  # a fresh file, never one there already
                    step = (f"guard {d}\nmkdir -p -- {d} 2>/dev/null || exit {NOT_DIR}\n"
                            f"guard {t}\n[ -d {t} ] && exit {IS_DIR}\nset -o noclobber\n"
                            f"printf %s {encoded} | base64 -d > {p}\n")  # fmt: skip
                else:
                    step = (f"guard {p}\n[ -f {p} ] || exit {MISSING}\n"
                            f"printf %s {encoded} | base64 -d >> {p}\n")  # fmt: skip
                if i == len(chunks) - 1:
                    step += (f"guard {t}\n[ -d {t} ] && exit {IS_DIR}\n"
                             f"mv -fT -- {p} {t} && stat -c %s -- {t}\n")  # fmt: skip
                result = self._run(principal, session, step)
                _fail(result, rel, writing=True)
            if result.stdout.strip() != str(len(data)):  # written over meanwhile, from inside
                raise Conflict(f"'{rel}' changed while it was written: write it again")
        except Exception:
            self._forget(principal, session, partial)
            raise
        return rel

    def _forget(self, principal: Principal, session: Session, partial: str) -> None:
        """Remove what a failed upload left (best effort)."""
        p = shlex.quote(partial)
        try:
            self._run(principal, session, f"guard {p}\nrm -f -- {p}\n")
        except Exception:  # the upload's own error is the one to tell
            return

    def download(self, principal: Principal, session: Session, path: str) -> tuple[str, bytes]:
        """~/persist/`path`'s bytes (read in steps; Conflict if it changed meanwhile)."""
        rel = relative(path, "path")
        f = shlex.quote(f"{PERSIST}/{rel}")
        stamp, data, size = None, bytearray(), None
        index = 0
        while size is None or len(data) < size:
            step = (f"guard {f}\n[ -e {f} ] || exit {MISSING}\n[ -d {f} ] && exit {IS_DIR}\n"
                    f"[ -f {f} ] || exit {NOT_FILE}\n"
                    f"[ $(stat -c %s -- {f}) -le {MAX_FILE} ] || exit {TOO_BIG}\n"
                    f"stat -c '%s %.9Y %i' -- {f}\n"
                    f"dd if={f} bs={DOWN_CHUNK} skip={index} count=1 iflag=fullblock "
                    "status=none | base64 -w0\n")  # fmt: skip
            result = self._run(principal, session, step)
            _fail(result, rel, writing=False)
            head, _, body = result.stdout.partition("\n")
            if stamp is not None and head != stamp:
                raise Conflict(f"'{rel}' changed while it was read: read it again", field="path")
            stamp = head
            try:
                size = int(head.split()[0])
                chunk = base64.b64decode(body.strip(), validate=True)
            except (ValueError, IndexError, binascii.Error):
                raise Conflict(f"'{rel}' could not be read", field="path") from None
            if not chunk and len(data) < size:  # shorter than it said: it changed
                raise Conflict(f"'{rel}' changed while it was read: read it again", field="path")
            data += chunk
            index += 1
        return rel, bytes(data[:size])

    def listing(self, principal: Principal, session: Session) -> tuple[list[StoredFile], bool]:
        """The files under ~/persist (symbolic links neither listed nor followed), at most
        MAX_LISTED; and whether there were more."""
        d = shlex.quote(PERSIST)
        step = (f"[ -e {d} ] || [ -L {d} ] || exit 0\nguard {d}\n[ -d {d} ] || exit {NOT_DIR}\n"
                f"find {d} -mindepth 1 -type f ! -name '{UPLOADING}*' ! -name $'*\\n*' "
                f"-printf '%s\\t%T@\\t%P\\n' | head -n {MAX_LISTED + 1}\n")  # fmt: skip
        result = self._run(principal, session, step)
        _fail(result, PERSIST, writing=False)
        found = []
        for line in result.stdout.splitlines():
            size, _, rest = line.partition("\t")
            modified, _, rel = rest.partition("\t")
            try:
                found.append(StoredFile(rel, int(size), float(modified)))
            except ValueError:
                continue  # a line cut by the output's cap
        return found[:MAX_LISTED], len(found) > MAX_LISTED
