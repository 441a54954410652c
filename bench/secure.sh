#!/usr/bin/env bash
# What TLS and tokens cost: the same `ringkv bench` workloads against a
# 3-node cluster started open (loopback, no TLS, no tokens) and one started
# with `ringkv cluster --secure` (TLS, mutual TLS between peers, tokens
# checked on every request), one after the other in one run, and the ratios.
#
#   bench/secure.sh                  # 10 s per workload
#   DURATION=30s bench/secure.sh
#
# Settings as in bench/compare.sh: 100-byte values, 10,000 keys (zipfian),
# 64 requests in flight, durability "group". Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
WORK="$(mktemp -d -t ringkv-secure-XXXXXX)"
PID=""
stop() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi
}
trap 'stop; rm -rf "$WORK"' EXIT INT TERM

cargo build -q --release -p ringkv
R="${CARGO_TARGET_DIR:-target}/release/ringkv"

# start NAME BASE_PORT [cluster flags...]: runs `ringkv cluster` until it says it is up.
start() {
    local name="$1" port="$2"; shift 2
    "$R" cluster --nodes 3 --base-port "$port" --data-dir "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 600); do
        grep -q "is up" "$WORK/$name.log" && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "error: the $name cluster did not come up; see its log:" >&2; cat "$WORK/$name.log" >&2; exit 1
}

# bench ENDPOINTS WORKLOAD [flags...]: prints ops/s, and p50 and p99 ms of
# the writes (of the reads when there are none).
bench() {
    local endpoints="$1" workload="$2"; shift 2
    "$R" --endpoints "$endpoints" "$@" --json bench --workload "$workload" --duration "$DURATION" \
        | python3 -c '
import json, sys
r = json.load(sys.stdin)
errors = sum(r["errors"].values()) if isinstance(r["errors"], dict) else r["errors"]
if errors > r["ops"] / 100:
    sys.exit("error: %s failed requests against %s ok (%s): the numbers would not mean anything" % (errors, r["ops"], r["errors"]))
h = r["writes"] if r["writes"]["count"] else r["reads"]
print(r["ops_per_sec"], h["p50_ms"], h["p99_ms"])'
}

declare -A RESULT
run_all() {
    local name="$1" endpoints="$2"; shift 2
    for w in write a c; do RESULT["$name.$w"]="$(bench "$endpoints" "$w" "$@")"; done
}

echo "== open cluster (no TLS, no tokens)"
start open 7601
run_all open 127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603
stop

echo "== secure cluster (TLS, mutual TLS between peers, tokens)"
"$R" cert init --dir "$WORK/certs" >/dev/null
start secure 7701 --secure "$WORK/certs"
run_all secure 127.0.0.1:7701,127.0.0.1:7702,127.0.0.1:7703 --ca "$WORK/certs/ca.crt" --token "$(cat "$WORK/certs/admin.token")"
stop

printf '\n%-34s %12s %12s %8s %8s %8s %8s %9s\n' "workload (${DURATION}, 64 in flight)" "open ops/s" "secure ops/s" "p50 open" "secure" "p99 open" "secure" "ratio"
for w in write a c; do
    read -r o50 o_p50 o_p99 <<<"${RESULT[open.$w]}"
    read -r s50 s_p50 s_p99 <<<"${RESULT[secure.$w]}"
    case "$w" in write) label="write (QUORUM puts)";; a) label="a (50% ONE gets, 50% QUORUM puts)";; c) label="c (ONE gets)";; esac
    ratio=$(python3 -c "print(f'{$s50/$o50:.2f}')")
    printf '%-34s %12.0f %12.0f %8.2f %8.2f %8.2f %8.2f %8sx\n' "$label" "$o50" "$s50" "$o_p50" "$s_p50" "$o_p99" "$s_p99" "$ratio"
done
