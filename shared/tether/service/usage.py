"""What a running session uses, measured inside its workspace by one short command: the
memory its processes hold, the CPU they take over half a second, its home's size on disk and
the bytes its network interfaces moved. Every workspace has its own process and network
namespaces, so these are its own (with `TETHER_SANDBOX=none`, a development mode, they are
the host's). There is no GPU to measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tether.core.models import Principal, utcnow
from tether.core.quantities import to_bytes
from tether.errors import Conflict, Timeout
from tether.service.sessions import Sessions

DEFAULT_MEMORY = "1Gi"  # a workspace's memory limit when its resources name none
SAMPLE = 0.5  # seconds between the two CPU readings

# Prints `key value...` lines, then /proc/net/dev after a `net` line.
MEASURE = r"""set -u
ticks() {
  local total=0 f line rest
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    rest=${line##*) }
    set -f; set -- $rest; set +f
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
rss=0
for f in /proc/[0-9]*/status; do
  while read -r key value _; do
    if [ "$key" = VmRSS: ]; then rss=$((rss + value)); break; fi
  done < "$f" 2>/dev/null
done
t0=$(ticks); c0=$EPOCHREALTIME
sleep SAMPLE
t1=$(ticks); c1=$EPOCHREALTIME
echo "cpu $t0 $t1 $c0 $c1 $(getconf CLK_TCK)"
echo "rss_kb $rss"
echo "disk_kb $(du -skx . 2>/dev/null | cut -f1)"
echo net
cat /proc/net/dev
""".replace("SAMPLE", str(SAMPLE))


@dataclass(frozen=True)
class Usage:
    session_id: str
    cpu_percent: float  # of one core
    memory_bytes: int
    memory_limit_bytes: int
    disk_bytes: int
    network_rx_bytes: int
    network_tx_bytes: int
    at: datetime


def parse(output: str) -> dict[str, list[str]]:
    """The command's lines by key; `net` holds /proc/net/dev's interface lines."""
    head, _, net = output.partition("\nnet\n")
    fields = {line.split()[0]: line.split()[1:] for line in head.splitlines() if line.split()}
    fields["net"] = [line for line in net.splitlines() if ":" in line]
    return fields


def network(lines: list[str]) -> tuple[int, int]:
    """Bytes received and sent on every interface but the loopback."""
    rx = tx = 0
    for line in lines:
        name, _, counters = line.partition(":")
        values = counters.split()
        if name.strip() == "lo" or len(values) < 9:
            continue
        rx, tx = rx + int(values[0]), tx + int(values[8])
    return rx, tx


@dataclass
class Usages:
    sessions: Sessions

    def measure(self, principal: Principal, session_id: str) -> Usage:
        """Measure the caller's running session (Conflict when it is not running)."""
        session = self.sessions.usable(principal, session_id)
        result = self.sessions.execute(principal, session.id, MEASURE, 30.0)
        if result.timed_out:
            raise Timeout("The workspace did not answer within 30s")
        try:
            fields = parse(result.stdout)
            t0, t1, c0, c1, hz = fields["cpu"]
            seconds = max(float(c1) - float(c0), 1e-3)
            cpu = max(0.0, (int(t1) - int(t0)) / int(hz) / seconds * 100)
            rx, tx = network(fields["net"])
            memory = int(fields["rss_kb"][0]) * 1024
            disk = int((fields.get("disk_kb") or ["0"])[0] or 0) * 1024
        except (KeyError, ValueError, ZeroDivisionError):
            said = (result.stderr.strip() or result.stdout.strip())[-300:]
            raise Conflict(f"The workspace's usage could not be read: {said}") from None
        limit = session.resources.get("memory") or DEFAULT_MEMORY
        return Usage(
            session_id=session.id,
            cpu_percent=round(cpu, 1),
            memory_bytes=memory,
            memory_limit_bytes=to_bytes(limit, "resources.memory"),
            disk_bytes=disk,
            network_rx_bytes=rx,
            network_tx_bytes=tx,
            at=utcnow(),
        )
