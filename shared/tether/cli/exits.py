"""`tether`'s exit codes, and the one line each failure is told in."""

from __future__ import annotations

import httpx

from tether import errors

OK = 0
FAILED = 1  # any other error: a conflict, a bad value the server refused, a server fault
USAGE = 2  # click's: a wrong option or argument
AUTH = 3  # the key is missing, wrong or not allowed (401, 403)
NOT_FOUND = 4  # no such session, operation, cluster or profile (404)
UNAVAILABLE = 5  # the server is unreachable, busy or timed out (503, 504, connection errors)
INTERRUPTED = 130  # Ctrl-C, as shells count it

# Shown by `tether --help` (click keeps a `\b` paragraph as written).
HELP = """\b
Exit status:
  0    ok (exec: the command's own exit code)
  1    another error (the message says which)
  2    usage error: an option or argument is wrong
  3    authentication: no API key, or the server refused it (401, 403)
  4    not found: no such session, operation or profile (404)
  5    unavailable: the server is unreachable, busy, or timed out
  130  interrupted (Ctrl-C)
  kubectl has its own: kubectl's code, 124 timed out, 125 tether failed, 126 refused"""


def classify(exc: BaseException, url: str) -> tuple[str, int] | None:
    """The one-line message and exit code for `exc`, or None when it is no failure we know
    (a bug: the traceback is then worth having)."""
    if isinstance(exc, errors.TetherError):
        return exc.message, _code(exc)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return (
            f"{url!r} is not an http(s) URL ({exc}); check TETHER_URL, --url or the profile",
            FAILED,
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time ({type(exc).__name__})", UNAVAILABLE
    if isinstance(exc, httpx.TransportError | OSError):
        return (
            f"cannot reach {url}: {exc or type(exc).__name__}; is the server up (`tether "
            "up`), and TETHER_URL right?",
            UNAVAILABLE,
        )
    if isinstance(exc, ValueError):  # a success that is not JSON: something else answers there
        return f"{url} did not answer as Tether does; check TETHER_URL or --url", FAILED
    return None


def _code(exc: errors.TetherError) -> int:
    if isinstance(exc, errors.Unauthenticated | errors.Forbidden):
        return AUTH
    if isinstance(exc, errors.NotFound):
        return NOT_FOUND
    if isinstance(exc, errors.Unavailable | errors.Timeout | errors.RateLimited):
        return UNAVAILABLE
    status = exc.details.get("status")
    if isinstance(status, int) and status in (502, 503, 504):
        return UNAVAILABLE
    return FAILED
