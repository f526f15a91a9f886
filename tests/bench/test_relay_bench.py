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
FRAMES = int(os.environ.get("TETHER_BENCH_FRAMES", "400"))
PINGS = int(os.environ.get("TETHER_BENCH_PINGS", "1000"))
ROOT = Path(__file__).resolve().parents[2]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


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
    try:

        async def main() -> dict[str, tuple[list[float], ...]]:
            urls = {
                "direct": f"ws://127.0.0.1:{info['direct']}/pty",
                "relay": f"ws://127.0.0.1:{info['relay']}/v1/sessions/{info['session']}/terminal",
            }
            results: dict[str, tuple[list[float], ...]] = {k: ([], [], [], []) for k in urls}
            async with aiohttp.ClientSession() as http:
                conns = {k: await http.ws_connect(u, headers={"X-API-Key": info["key"]},
                                                  max_msg_size=1 << 22, compress=0)
                         for k, u in urls.items()}  # fmt: skip
                for _ in range(3):  # alternate, so machine noise hits both alike
                    for name, ws in conns.items():
                        results[name][0].append(await throughput(ws))
                        results[name][1].extend(await round_trips(ws))
                        results[name][2].append(await upload(ws))
                        results[name][3].append(await download(ws))
                for ws in conns.values():
                    await ws.close()
            return results

        results = asyncio.run(main())
    finally:
        for p in (proc, echo):
            p.kill()
            p.wait()
    (d_tp, d_rt, d_up, d_down), (r_tp, r_rt, r_up, r_down) = results["direct"], results["relay"]

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    tp_direct, tp_relay = median(d_tp), median(r_tp)
    with capsys.disabled():
        print(f"\n\nrelay vs direct WebSocket (echo far end), {FRAMES} x 64 KiB frames, "
              f"{PINGS} x 100 B round trips, 3 alternating rounds")  # fmt: skip
        for label, d, r in (("upload (client->far)", median(d_up), median(r_up)),
                            ("download (far->client)", median(d_down), median(r_down)),
                            ("echo, both at once", tp_direct, tp_relay)):  # fmt: skip
            print(f"  {label:<22} direct {d:8.1f} MB/s   relay {r:8.1f} MB/s"
                  f"   ratio {r / d:.2f}x (goal >= 0.80x)")  # fmt: skip
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
