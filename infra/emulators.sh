#!/usr/bin/env bash
# Usage: infra/emulators.sh run CMD [ARGS...]
# Starts the Firestore and Pub/Sub emulators on free loopback ports, exports
# FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST / GOOGLE_CLOUD_PROJECT, runs CMD, stops both.
set -euo pipefail
[ "${1:-}" = run ] && shift || { echo "usage: $0 run CMD [ARGS...]" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
logdir=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

start() { # name host:port cmd...
  local name=$1 hostport=$2; shift 2
  setsid "$@" --host-port="$hostport" >"$logdir/$name.log" 2>&1 &
  pids+=($!)
}
fs="127.0.0.1:$(free_port)"; ps="127.0.0.1:$(free_port)"
start firestore "$fs" gcloud emulators firestore start --quiet
start pubsub "$ps" gcloud beta emulators pubsub start --quiet
for hp in "$fs" "$ps"; do
  for _ in $(seq 1 120); do
    curl -sf "http://$hp/" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -sf "http://$hp/" >/dev/null || { echo "emulator on $hp did not start; logs in $logdir" >&2; cat "$logdir"/*.log >&2; exit 1; }
done
echo "emulators: firestore=$fs pubsub=$ps" >&2
export FIRESTORE_EMULATOR_HOST=$fs PUBSUB_EMULATOR_HOST=$ps
export GOOGLE_CLOUD_PROJECT=${GOOGLE_CLOUD_PROJECT:-tether-test}
"$@"
