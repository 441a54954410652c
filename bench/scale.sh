#!/usr/bin/env bash
# How a 3-node cluster (replication factor 3, so every node holds every key)
# does at 1M keys against 10k keys, on the default engine: disk bytes per
# key, resident memory per node, and QUORUM put and ONE get throughput
# (64 in flight, 100-byte values, token-aware routing). Restart time after
# kill -9 at 1M keys is bench/restart.sh's job.
#
#   bench/scale.sh
#   KEYS=200000 DURATION=5s bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS="${KEYS:-1000000}"
SMALL="${SMALL:-10000}"
DURATION="${DURATION:-10s}"
WORK="$(mktemp -d -t ringkv-scale-XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
for p in 7461 7462 7463; do port_free "$p" || { echo "error: port $p is in use; stop whatever holds it" >&2; exit 2; }; done
echo "== building ringkv (release)" >&2
cargo build -q --release -p ringkv
R=target/release/ringkv
EP="127.0.0.1:7461,127.0.0.1:7462,127.0.0.1:7463"

ready() {
    "$R" --endpoints "$EP" status --json 2>/dev/null | python3 -c 'import json,sys; n=json.load(sys.stdin)["nodes"]; sys.exit(not (len(n) == 3 and all(x["state"] == "normal" and x["liveness"] == "up" for x in n)))' 2>/dev/null
}
# Resident memory of the cluster's three node processes, in MiB each.
rss() {
    local total=0 n=0
    for pid in $(pgrep -f "serve .*--data-dir $WORK/$1" || true); do
        kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + kb)); n=$((n + 1))
    done
    [ "$n" -gt 0 ] || { echo 0; return; }
    echo $((total / n / 1024))
}
ops() { # ringkv bench args -> ops/s
    "$R" --json --endpoints "$EP" --policy token-aware bench "$@" --duration "$DURATION" --value-size 100 --concurrency 64 \
        | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["ops_per_sec"]))'
}

printf '%-10s %10s %14s %12s %14s %12s\n' "keys" "load s" "disk B/key" "RSS MiB/node" "QUORUM put/s" "ONE get/s"
for keys in "$SMALL" "$KEYS"; do
    dir="c$keys"
    "$R" cluster --nodes 3 --base-port 7461 --data-dir "$WORK/$dir" >"$WORK/$dir.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do ready && break; sleep 0.1; done
    ready || { echo "error: the cluster did not come up; log: $WORK/$dir.log" >&2; exit 1; }
    t0=$(date +%s.%N)
    "$R" --endpoints "$EP" --policy token-aware bench --workload write --load --ops 1 --keys "$keys" --value-size 100 --concurrency 64 >/dev/null
    t1=$(date +%s.%N)
    put=$(ops --workload write --write-level quorum --keys "$keys")
    get=$(ops --workload c --read-level one --keys "$keys")
    mem=$(rss "$dir")
    disk=$(du -sb "$WORK/$dir" | cut -f1)
    printf '%-10d %10.1f %14d %12d %14d %12d\n' "$keys" "$(python3 -c "print($t1 - $t0)")" "$((disk / 3 / keys))" "$mem" "$put" "$get"
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
    unset 'PIDS[-1]'
    for _ in $(seq 1 100); do port_free 7461 && port_free 7462 && port_free 7463 && break; sleep 0.1; done
done
