#!/usr/bin/env bash
# A local Ray head for the cluster tests and benchmark: one node on 127.0.0.1 only (no other interface), few
# CPUs, a small object store. Its workers import this checkout (PYTHONPATH), so they run the code under test.
# Idempotent: a second run finds the head and only prints its address. Prints one line on stdout: the address
# (for L2M_TEST_RAY_ADDRESS / L2M_RAY_ADDRESS); everything else goes to stderr. Needs Ray in .venv (setup.sh).
#   L2M_RAY_PORT  GCS port on 127.0.0.1 (default 46379)
#   L2M_RAY_CPUS  CPUs the head offers to workers (default 2)
#   scripts/ray.sh stop   stops Ray on this machine (`ray stop`)
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${L2M_RAY_PORT:-46379}
CPUS=${L2M_RAY_CPUS:-2}
RAY=${L2M_RAY_BIN:-$PWD/.venv/bin/ray}
# Ray otherwise advertises the machine's external address even for a head started on 127.0.0.1.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0

[ -x "$RAY" ] || { echo "ray.sh: no $RAY; run scripts/setup.sh (Ray is in the dev and cluster extras)" >&2; exit 1; }
if [ "${1:-}" = "stop" ]; then
  "$RAY" stop >&2 || true
  exit 0
fi
# Something listening on the port is taken for the head (`ray status` takes most of a minute to say no).
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "ray.sh: starting a Ray head on 127.0.0.1:$PORT with $CPUS CPUs" >&2
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$RAY" start --head --node-ip-address 127.0.0.1 --port "$PORT" \
    --num-cpus "$CPUS" --object-store-memory 100000000 --include-dashboard false --disable-usage-stats >&2
fi
echo "127.0.0.1:$PORT"
