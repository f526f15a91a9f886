"""Egress for a workspace whose template asks for it: a user-mode network (slirp4netns) in the
workspace's own network namespace.

Every workspace has a network namespace of its own, holding only a loopback. With egress,
slirp4netns gives it an interface whose packets leave as ordinary sockets of the agent's host,
so the workspace reaches the internet, but not what is cut here: the host's loopback
(`--disable-host-loopback`), the host's own addresses as they are at the start (where the
stack may listen), link-local 169.254.0.0/16 (the cloud metadata server, with its
credentials), and the private and shared ranges (the VPC, other agents, the LAN), as GKE's
egress policy does. The cuts are routes in the workspace's namespace, set before anything runs
there; the workspace holds no capability to change them. slirp4netns itself runs in the
workspace's control group.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass

from tether.errors import Unavailable

DNS = "10.0.2.3"  # slirp4netns's resolver, which forwards to the host's
RESOLV_CONF = f"nameserver {DNS}\n".encode()
# Metadata, private and shared ranges; the gateway is the host itself. (slirp4netns's own
# 10.0.2.0/24 stays: a more specific route.)
ALWAYS_CUT = (
    "169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "10.0.2.2/32",
)  # fmt: skip


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses (the stack may listen on any of them)."""
    out = subprocess.run(
        ["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True
    ).stdout
    found = {
        info["local"]
        for link in json.loads(out)
        for info in link.get("addr_info", [])
        if not ipaddress.ip_address(info["local"]).is_loopback
    }
    return sorted(found)


@dataclass
class Egress:
    """A workspace's user-mode network; it ends when `close()` is called or the agent dies."""

    proc: subprocess.Popen[bytes]
    exit_fd: int

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.exit_fd)  # slirp4netns's signal to go
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def attach(pid: int, in_userns: bool, cut: list[str]) -> Egress:
    """Gives the network namespace of `pid` (which runs nothing yet) its way out. With
    `in_userns`, the namespace belongs to the workspace's user namespace (the stack is not
    root), which the helpers join to act in it."""
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    args = [
        "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
        "--enable-sandbox", "--enable-seccomp", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
    ]  # fmt: skip
    if in_userns:
        args.append(f"--userns-path=/proc/{pid}/ns/user")
    try:
        proc = subprocess.Popen(
            [*args, str(pid), "tap0"],
            pass_fds=(ready_w, exit_r),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        for fd in (ready_r, ready_w, exit_r, exit_w):
            os.close(fd)
        raise Unavailable(f"Egress needs slirp4netns: {exc}") from exc
    os.close(ready_w)
    os.close(exit_r)
    egress = Egress(proc, exit_w)
    try:
        with os.fdopen(ready_r, "rb") as ready:
            if ready.read(1) != b"1":
                _, err = proc.communicate(timeout=5)
                raise Unavailable(f"slirp4netns failed: {err.decode(errors='replace').strip()}")
        join = ["nsenter", f"--target={pid}", "--net"]
        if in_userns:
            join += ["--user", "--preserve-credentials"]
        routes = "".join(f"route add unreachable {net}\n" for net in [*ALWAYS_CUT, *cut])
        done = subprocess.run(
            [*join, "ip", "-batch", "-"], input=routes.encode(), capture_output=True
        )
        if done.returncode:
            raise Unavailable(f"Could not fence the workspace's network: {done.stderr.decode()}")
    except BaseException:
        egress.close()
        raise
    return egress
