"""A terminal's output, read from a real PTY, ends with its shell."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import threading

from tether.runtime.terminal import DRAIN_READS, ShellOutput


async def read_all(leader: int, exited: asyncio.Future[object]) -> bytes:
    output = ShellOutput(leader, exited)
    try:
        chunks = []
        while data := await asyncio.wait_for(output.read(), 10):
            chunks.append(data)
        return b"".join(chunks)
    finally:
        output.close()


def test_output_left_unread_when_the_shell_exited_is_read_and_then_it_ends() -> None:
    """The shell has exited and its last output is unread, while a job it left holds the PTY
    open: that output arrives whole, and the terminal still ends. (A PTY passes bytes on from a
    kernel worker, so they may arrive after the loop last looked: no readiness event follows,
    and a reader that waited for one after the exit hung; this run cannot force that order.)"""
    leader, follower = pty.openpty()  # `follower` stays open: the job left in the background
    try:
        os.set_blocking(leader, False)
        last = b"y" * 9000 + b"logout\n"  # more than one read of a PTY takes
        assert os.write(follower, last) == len(last)

        async def main() -> bytes:
            exited = asyncio.get_running_loop().create_future()
            exited.set_result(0)
            return await read_all(leader, exited)

        assert asyncio.run(main()).replace(b"\r", b"") == last
    finally:
        os.close(leader)
        os.close(follower)


def test_a_job_flooding_the_pty_after_the_exit_gets_a_bounded_drain() -> None:
    leader, follower = pty.openpty()
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            try:
                os.write(follower, b"y" * 4096)
            except OSError:
                return

    writer = threading.Thread(target=flood, daemon=True)
    try:
        os.set_blocking(leader, False)
        writer.start()
        assert select.select([leader], [], [], 30)[0], "the job never wrote"

        async def main() -> bytes:
            exited = asyncio.get_running_loop().create_future()
            exited.set_result(0)
            return await read_all(leader, exited)

        assert 0 < len(asyncio.run(main())) <= DRAIN_READS * 65536
    finally:
        stop.set()
        os.close(leader)  # the writer's next write fails: it ends
        writer.join(10)
        os.close(follower)
