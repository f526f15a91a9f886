"""The runtime's start: `python -m tether.runtime`. The exec channel answers first, before the
HTTP server's imports (aiohttp: most of a start's time) are done, so a workspace takes its
first command sooner; HTTP callers (PTY, VNC, logs) wait in the listening socket's backlog
until the server runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
from pathlib import Path

from tether.runtime import auth, exec_channel
from tether.runtime.session_log import open_for_append


def main() -> None:
    parser = argparse.ArgumentParser(description="Tether workspace runtime")
    parser.add_argument("--home", default=os.environ.get("HOME", "/"))
    parser.add_argument("--socket-fd", type=int, help="a listening Unix socket to serve on")
    parser.add_argument("--socket", help="a Unix socket path to listen on")
    parser.add_argument("--exec-socket", help="a Unix socket path for exec_channel")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--exec-socket-fd", type=int, help="a listening socket for exec_channel")
    parser.add_argument("--log-file", help="where the runtime's own output goes, in the home")
    parser.add_argument("--env-fd", type=int, help="the workspace's environment, as JSON")
    args = parser.parse_args()
    _init_if_first()
    if args.log_file:  # the agent reads our first words (a failed start) only
        fd = open_for_append(Path(args.log_file))
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    if args.env_fd:  # not through the launcher's environment, which runs as root
        with os.fdopen(args.env_fd) as f:
            env = json.load(f)
        os.environ.clear()
        os.environ.update(env)
    # Ours, not the workspace's: what we start must not inherit them.
    command = os.environ.pop("TETHER_MAIN_COMMAND", None) or None
    credential = auth.Credential(os.environ.pop(auth.ENV, None) or None)
    for fd in (args.socket_fd, args.exec_socket_fd):
        if fd:
            os.set_inheritable(fd, False)  # never into a command the workspace runs
    where = socket.socket(fileno=args.exec_socket_fd) if args.exec_socket_fd else args.exec_socket
    channel = exec_channel.serve(where, args.home, credential) if where else None

    from tether.runtime import server  # aiohttp's import: while the channel already answers

    server.run(args, command, credential, channel)


def _init_if_first() -> None:
    """As PID 1 (a local gVisor sandbox runs nothing above the runtime), every process the
    workspace orphans becomes ours, and a dead one that nobody reaps still counts against its
    process limit: a fork bomb's corpses would hold it there for good. So the first process
    stays behind as a minimal init that reaps them all, passes signals on to the runtime (its
    child, which returns from here) and ends as the runtime does. (Tether's image has tini.)"""
    if os.getpid() != 1:
        return
    runtime = os.fork()
    if runtime == 0:
        return
    os.closerange(3, 1 << 16)  # the runtime's descriptors are its own

    def pass_on(number: int, _: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has just ended
            os.kill(runtime, number)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    while True:
        pid, status = os.wait()
        if pid == runtime:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)
