"""Relay throughput and added latency, next to a direct WebSocket connection measured in the
same run, and keystroke echo through the relay and a real PTY. Prints figures; asserts only
that data arrived intact.

Goals (issue 4): throughput >= 0.8x direct; added round trip <= 150 us at p50; keystroke
echo p50 <= 1 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import start_server

FRAME = 64 * 1024
FRAMES = int(os.environ.get("TETHER_BENCH_FRAMES", "1000"))
PINGS = int(os.environ.get("TETHER_BENCH_PINGS", "300"))
ROUNDS = int(os.environ.get("TETHER_BENCH_RELAY_ROUNDS", "7"))
ROOT = Path(__file__).resolve().parents[2]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def median(xs: list[float]) -> float:
    return pct(xs, 0.5)


async def throughput(ws: aiohttp.ClientWebSocketResponse) -> float:
    """MB/s of 64 KiB frames sent and echoed back, both directions at once."""
    payload = os.urandom(FRAME)

    async def send() -> None:
        for _ in range(FRAMES):
            await ws.send_bytes(payload)

    started = time.perf_counter()
    sender = asyncio.ensure_future(send())
    for _ in range(FRAMES):
        msg = await ws.receive(timeout=30)
        assert msg.type is aiohttp.WSMsgType.BINARY and len(msg.data) == FRAME
    await sender
    return 2 * FRAMES * FRAME / (time.perf_counter() - started) / 1e6


async def upload(ws: aiohttp.ClientWebSocketResponse) -> float:
    """MB/s of 64 KiB frames from the client to the far end."""
    payload = os.urandom(FRAME)
    await ws.send_str(f"sink {FRAMES}")
    started = time.perf_counter()
    for _ in range(FRAMES):
        await ws.send_bytes(payload)
    assert (await ws.receive(timeout=60)).data == "done"
    return FRAMES * FRAME / (time.perf_counter() - started) / 1e6


async def download(ws: aiohttp.ClientWebSocketResponse) -> float:
    """MB/s of 64 KiB frames from the far end to the client."""
    started = time.perf_counter()
    await ws.send_str(f"source {FRAMES}")
    for _ in range(FRAMES):
        msg = await ws.receive(timeout=60)
        assert len(msg.data) == FRAME
    return FRAMES * FRAME / (time.perf_counter() - started) / 1e6


async def round_trips(ws: aiohttp.ClientWebSocketResponse) -> list[float]:
    payload = os.urandom(100)
    times = []
    for _ in range(PINGS):
        started = time.perf_counter()
        await ws.send_bytes(payload)
        msg = await ws.receive(timeout=10)
        times.append((time.perf_counter() - started) * 1e6)
        assert msg.data == payload
    return times


def serve(role: str, sock: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/bench/relay_servers.py"), role,
                             str(sock)], stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def test_relay_against_direct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    echo, far = serve("echo", tmp_path / "echo.sock")
    proc, info = serve("relay", tmp_path / "echo.sock")
    info |= far
    tests = {"upload (client->far)": upload, "download (far->client)": download,
             "echo, both at once": throughput}  # fmt: skip
    try:

        async def main() -> dict[str, dict[str, list[float]]]:
            urls = {
                "direct": f"ws://127.0.0.1:{info['direct']}/pty",
                "relay": f"ws://127.0.0.1:{info['relay']}/v1/sessions/{info['session']}/terminal",
            }
            results: dict[str, dict[str, list[float]]] = {k: {} for k in urls}
            async with aiohttp.ClientSession() as http:
                conns = {k: await http.ws_connect(u, headers={"X-API-Key": info["key"]},
                                                  max_msg_size=1 << 22, compress=0)
                         for k, u in urls.items()}  # fmt: skip
                for ws in conns.values():  # warm up: TCP grows its windows on the first MBs
                    for measure in tests.values():
                        await measure(ws)
                # Alternate, first one then the other first, so machine noise hits both alike.
                for i in range(ROUNDS):
                    for name in sorted(conns, reverse=bool(i % 2)):
                        for label, measure in tests.items():
                            results[name].setdefault(label, []).append(await measure(conns[name]))
                        results[name].setdefault("rtt", []).extend(await round_trips(conns[name]))
                for ws in conns.values():
                    await ws.close()
            return results

        results = asyncio.run(main())
    finally:
        for p in (proc, echo):
            p.kill()
            p.wait()
    direct, relay = results["direct"], results["relay"]
    with capsys.disabled():
        print(f"\n\nrelay vs direct WebSocket (echo far end), {FRAMES} x 64 KiB frames a "
              f"measure, {PINGS} x 100 B round trips, {ROUNDS} alternating rounds")  # fmt: skip
        for label in tests:
            ratios = [r / d for d, r in zip(direct[label], relay[label], strict=True)]
            print(f"  {label:<22} direct {median(direct[label]):8.1f} MB/s   relay "
                  f"{median(relay[label]):8.1f} MB/s   ratio {median(ratios):.2f}x "
                  f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; goal >= 0.80x)")  # fmt: skip
        d_rt, r_rt = direct["rtt"], relay["rtt"]
        print(f"  100 B round trip p50  direct {pct(d_rt, .5):8.1f} us     relay "
              f"{pct(r_rt, .5):8.1f} us     added {pct(r_rt, .5) - pct(d_rt, .5):.1f} us "
              f"(goal <= 150 us)")  # fmt: skip
        print(f"  100 B round trip p99  direct {pct(d_rt, .99):8.1f} us     relay "
              f"{pct(r_rt, .99):8.1f} us")  # fmt: skip


def test_keystroke_echo_through_relay_and_pty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server(tmp_path / "home")
    try:
        h = {"X-API-Key": server.key}
        sid = httpx.post(f"{server.url}/v1/sessions", json={"template": "shell"}, headers=h,
                         timeout=60).json()["id"]  # fmt: skip
        url = server.url.replace("http", "ws", 1) + f"/v1/sessions/{sid}/terminal"

        async def main() -> list[float]:
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(url, headers=h)
                await ws.send_bytes(b"stty -icanon; cat > /dev/null\n")
                await asyncio.sleep(0.5)
                while True:  # drain the prompt and the echo of that line
                    try:
                        await ws.receive(timeout=0.3)
                    except TimeoutError:
                        break
                times = []
                for i in range(300):
                    key = b"abcdefghij"[i % 10 : i % 10 + 1]
                    started = time.perf_counter()
                    await ws.send_bytes(key)
                    msg = await ws.receive(timeout=5)
                    times.append((time.perf_counter() - started) * 1000)
                    assert msg.data == key, msg
                await ws.close()
                return times

        times = asyncio.run(main())
    finally:
        server.stop()
    p50, p99 = pct(times, 0.5), pct(times, 0.99)
    with capsys.disabled():
        print(f"  keystroke echo (client -> relay -> runtime -> PTY -> back) p50 {p50:.2f} ms"
              f"  p99 {p99:.2f} ms  (goal p50 <= 1 ms)\n")  # fmt: skip
