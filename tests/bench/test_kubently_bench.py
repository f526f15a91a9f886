"""Kubently's execute round trip, next to the real `kubectl` run directly against the same
API server (tests/fakes/kube.py) in the same run: `kubectl get pods -A` spawned bare with the
environment and warm discovery cache the cluster agent gives it; the agent's own kubectl
wrapper called directly; `POST /debug/execute` through the Kubently target in process; the
same over HTTP to `tether up`; `POST /debug/execute/async` polled until completed; and a
third-party executor on the document's long poll running the same kubectl. Prints figures;
asserts only correctness (every answer 200 with the pods in it).

Issue 16: "execute round trip through the API vs `kubectl` run directly against the same API
server, in the same run".
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tether.agent.kubectl import Kubectl
from tether.core.models import Role
from tether.local.stack import LocalStack
from tether.settings import Settings

from tests.bench.test_exec_bench import pct
from tests.e2e.conftest import start_server
from tests.fakes.kube import FakeKube
from tests.surfaces.conftest import ADMIN_KEY, ALICE_KEY, target_client

ROUNDS = int(os.environ.get("TETHER_BENCH_KUBENTLY_ROUNDS", "20"))
ARGS = ["get", "pods", "-A"]
ALICE = {"X-API-Key": ALICE_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
# Generous limits: the bench sends far more than Kubently's 100 requests and 50 commands a
# minute, and a 429 would measure the limiter, not the round trip.
LIMITS = {"login": 1000, "create": 1000, "api": 100_000, "commands": 100_000}
POLL = 0.01  # how often the async caller asks after its operation (adds up to this much)
DIRECT = "kubectl, direct"


def kubectl_env(kubeconfig: Path, cache: Path) -> dict[str, str]:
    """What the cluster agent passes kubectl (tether.agent.kubectl): the path, the locale,
    its kubeconfig and its discovery cache, nothing else."""
    passed = ("PATH", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "LANG")
    env = {k: v for k, v in os.environ.items() if k in passed}
    return {**env, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(cache)}


def has_pods(output: str) -> bool:
    return "nginx" in output and "kube-system" in output


class Executor:
    """A third-party executor on the long poll (`GET /agent/commands?wait=`, `POST
    /agent/results`), running each command with `run` (as tests/surfaces/test_kubently.py's)."""

    def __init__(self, cluster: str, token: str, run: Callable[[list[str]], str]) -> None:
        self.client = target_client("kubently")
        self.headers = {"Authorization": f"Bearer {token}", "X-Cluster-ID": cluster}
        self.run = run
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            r = self.client.get("/agent/commands?wait=1", headers=self.headers)
            if r.status_code != 200:
                if r.status_code != 204:
                    self.errors.append(f"{r.status_code} {r.json}")
                continue
            for command in r.json["commands"]:
                started = time.monotonic()
                output = self.run(command["args"])
                took = round((time.monotonic() - started) * 1000)
                result = {"success": True, "output": output, "exit_code": 0,
                          "execution_time_ms": took}  # fmt: skip
                answer = {"command_id": command["id"], "result": result}
                posted = self.client.post("/agent/results", headers=self.headers, json=answer)
                if posted.status_code != 200:
                    self.errors.append(f"{posted.status_code} {posted.json}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.mark.timeout(300)
def test_execute_round_trip_next_to_kubectl_direct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kube = FakeKube.cluster(token="agent").start()
    kubeconfig = kube.write_kubeconfig(tmp_path / "dev.yaml", token="agent")
    settings = Settings(
        home=tmp_path / "home",
        api_key=ADMIN_KEY,
        rate_limits=dict(LIMITS),
        clusters={"dev": str(kubeconfig)},
    )
    stack = LocalStack(settings, sweep_interval=3600)
    stack.start()
    server = None
    executor = None
    try:
        stack.services.auth.ensure_user("alice", Role.USER)
        stack.services.auth.add_key("alice", ALICE_KEY)
        kb = target_client("kubently")
        # The agent's own discovery cache, so the direct run reads what the agent reads.
        cache = settings.home / "clusters" / "dev" / "kube-cache"
        env = kubectl_env(kubeconfig, cache)

        def run_kubectl(args: list[str]) -> str:
            # As the agent starts it: an argv list, no stdin, its own session.
            done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  check=True)  # fmt: skip
            return done.stdout

        def direct() -> None:
            assert has_pods(run_kubectl(ARGS))

        wrapper = Kubectl(settings.kubectl, cache, kubeconfig)

        def agent_wrapper() -> None:
            result = wrapper.run(ARGS, 10, 1 << 20)
            assert result["exit_code"] == 0 and has_pods(result["output"]), result

        agent_ms: list[float] = []  # the agent's own kubectl time, as the answer reports it

        def checked(status: int, body: Any) -> None:
            assert status == 200, body
            assert body["success"] is True and has_pods(body["output"]), body

        def api_sync() -> None:
            r = kb.post("/debug/execute", headers=ALICE, json={"cluster_id": "dev", "args": ARGS})
            checked(r.status_code, r.json)
            agent_ms.append(r.json["execution_time_ms"])

        def api_async() -> None:
            r = kb.post(
                "/debug/execute/async", headers=ALICE, json={"cluster_id": "dev", "args": ARGS}
            )
            assert r.status_code == 202, r.json
            poll = r.json["poll_url"]
            deadline = time.monotonic() + 30
            while (op := kb.get(poll, headers=ALICE).json)["status"] != "completed":
                assert op["status"] == "pending" and time.monotonic() < deadline, op
                time.sleep(POLL)
            checked(200, op["result"])

        # A cluster with no Tether agent: its commands go to whoever holds its token.
        token = kb.post("/admin/agents/ext/token", headers=ADMIN)
        assert token.status_code == 200, token.json
        executor = Executor("ext", token.json["token"], run_kubectl)

        def third_party() -> None:
            r = kb.post("/debug/execute", headers=ALICE, json={"cluster_id": "ext", "args": ARGS})
            checked(r.status_code, r.json)

        # `tether up` in its own process, its cluster agent on the same kubeconfig.
        server = start_server(
            tmp_path / "up",
            {
                "TETHER_CLUSTERS": f"dev={kubeconfig}",
                "TETHER_RATE_LIMITS": ",".join(f"{k}={v}" for k, v in LIMITS.items()),
            },
        )
        port = int(server.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"X-API-Key": server.key, "Content-Type": "application/json"}
        body = json.dumps({"cluster_id": "dev", "args": ARGS})

        def api_http() -> None:
            conn.request("POST", "/debug/execute", body, headers)
            response = conn.getresponse()
            checked(response.status, json.loads(response.read()))

        runs: dict[str, Callable[[], None]] = {
            DIRECT: direct,
            "the agent's kubectl wrapper": agent_wrapper,
            "API sync, in process": api_sync,
            "API sync, HTTP (tether up)": api_http,
            "API async + poll": api_async,
            "third-party executor": third_party,
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for fn in runs.values():  # warm up: discovery caches, connections, first imports
            for _ in range(3):
                fn()
        agent_ms.clear()
        for _ in range(ROUNDS):  # interleaved, so machine noise hits every series alike
            for name, fn in runs.items():
                started = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - started) * 1000)
        assert executor.errors == []
    finally:
        if executor is not None:
            executor.close()
        if server is not None:
            server.stop()
        stack.stop()
        kube.close()

    base = pct(times[DIRECT], 0.5)
    with capsys.disabled():
        print(
            f"\n\nKubently execute of `kubectl {' '.join(ARGS)}`, {ROUNDS} interleaved rounds (ms)"
        )
        for name, xs in times.items():
            p50 = pct(xs, 0.5)
            print(f"  {name:<30} p50 {p50:7.1f}  p90 {pct(xs, 0.9):7.1f}"
                  f"  {p50 / base:5.2f}x direct  {p50 - base:+7.1f} ms")  # fmt: skip
        # What Tether adds around the agent's kubectl: the request, the policy, the store
        # writes, the bus hop and the answer (the sync answer's execution_time_ms is the rest).
        ran, api = pct(agent_ms, 0.5), pct(times["API sync, in process"], 0.5)
        print(f"  the agent's kubectl, as the sync answers report it: p50 {ran:.0f}"
              f"  (in-process API p50 minus it: {api - ran:.1f} ms)\n")  # fmt: skip
