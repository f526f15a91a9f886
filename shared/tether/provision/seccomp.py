"""The seccomp filter every local workspace runs under (bubblewrap loads it before the runtime
starts; nothing in the workspace can remove it).

Everything is allowed except what a workspace never needs and an attacker reaches for: new
mounts and namespaces, other processes' memory, the kernel's keyring, BPF, io_uring, modules,
clocks, reboot, and socket families beyond Unix, IP and netlink. Refused calls fail with EPERM
(EAFNOSUPPORT for a family), as they would for an unprivileged user, so programs that probe
for them (a shell's `unshare`, a debugger) fail cleanly instead of being killed.
A syscall of another architecture (the 32-bit ABI) kills the process: libseccomp's default.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

REFUSED = (
    # mounts and namespaces: the sandbox's view of the host is fixed
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    # other processes: the pid namespace hides the host's, and these reach inside any
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # kernel attack surface no workspace needs
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "quotactl", "acct",
    "swapon", "swapoff", "reboot", "syslog", "vhangup", "ioperm", "iopl", "personality",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
)  # fmt: skip

# clone's flags that make a namespace (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
# NEWPID, NEWNET, NEWTIME): refused like unshare. clone3 passes its flags in memory, which a
# filter cannot read, so it answers ENOSYS and libc falls back to clone.
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
_CLONE_NAMESPACES |= 0x20000000 | 0x40000000 | 0x00000080


# Socket families a workspace may use: Unix, IPv4, IPv6 and netlink (which `ip` needs to read
# its own addresses). The rest are kernel attack surface, or reach past the network namespace
# (vsock, to the hypervisor).
_FAMILIES = (1, 2, 10, 16)


@functools.cache
def program() -> bytes:
    """The compiled BPF program (built once per process: libseccomp through ctypes)."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in REFUSED:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for bit in range(32):
        flag = 1 << bit
        if flag & _CLONE_NAMESPACES:
            rules.add_rule(
                seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag)
            )
    for family in range(max(_FAMILIES)):
        if family not in _FAMILIES:
            rules.add_rule(
                seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family)
            )
    rules.add_rule(
        seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GT, max(_FAMILIES))
    )
    with tempfile.TemporaryFile() as f:
        rules.export_bpf(f)
        f.seek(0)
        return f.read()


def program_fd() -> int:
    """A descriptor to read the program from, once (bubblewrap's `--seccomp FD`)."""
    data = program()
    read, write = os.pipe()
    os.write(write, data)  # a few hundred bytes: well within a pipe's buffer
    os.close(write)
    return read
