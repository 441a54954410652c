#!/usr/bin/env bash
# The gateway's overhead: the same workloads straight to a 3-node ringkv
# (gRPC, the client library) and through `ringkv gateway` (HTTP/1.1 to the
# gateway, which is the same client library), in one run, with the ratio.
#
#   bench/gateway.sh                       # 10 s per row
#   DURATION=30s CONCURRENCY=16 bench/gateway.sh
#
# Same settings on both paths: 100-byte values, 10,000 keys (zipfian),
# reads at ONE, writes at QUORUM, the token-aware policy (in the bench's
# client on the direct path, in the gateway's on the HTTP path), and
# CONCURRENCY requests in flight (64 by default). Everything runs on
# 127.0.0.1; the script stops what it started and leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONCURRENCY="${CONCURRENCY:-64}"
WORK="$(mktemp -d -t ringkv-gateway-bench-XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== building ringkv (release)"
cargo build -q --release -p ringkv
RINGKV="${CARGO_TARGET_DIR:-target}/release/ringkv"

port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_for() { # what, command...
    local what="$1"; shift
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "error: $what did not come up; logs are in $WORK" >&2
    trap - EXIT; exit 2
}
for p in 7401 7402 7403 7480; do
    port_free "$p" || { echo "error: port $p is in use; stop whatever holds it" >&2; exit 2; }
done

NODES="127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
GATEWAY="127.0.0.1:7480"
echo "== starting ringkv x3 and the gateway (work dir $WORK)"
"$RINGKV" cluster --nodes 3 --base-port 7401 --data-dir "$WORK/ringkv" >"$WORK/ringkv.log" 2>&1 &
PIDS+=($!)
ringkv_ready() { # every node normal and up
    "$RINGKV" --endpoints "$NODES" status --json | python3 -c 'import json,sys; n=json.load(sys.stdin)["nodes"]; sys.exit(not (len(n) == 3 and all(x["state"] == "normal" and x["liveness"] == "up" for x in n)))'
}
wait_for ringkv ringkv_ready
"$RINGKV" --policy token-aware gateway --listen "$GATEWAY" --nodes "$NODES" --log warn >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
wait_for "the gateway" python3 -c "import urllib.request; urllib.request.urlopen('http://$GATEWAY/v1/cluster')"

COMMON=(--duration "$DURATION" --keys 10000 --value-size 100 --concurrency "$CONCURRENCY" --read-level one --write-level quorum)
run() { # label, then ringkv args
    local label="$1"; shift
    echo "   $label" >&2
    "$RINGKV" --json "$@" | sed "s/^/$label\t/"
}
RESULTS="$WORK/results.tsv"
{
    echo "== loading 10,000 keys" >&2
    "$RINGKV" --endpoints "$NODES" bench --workload write --ops 1 --load --keys 10000 >/dev/null
    echo "== measuring ($DURATION each, $CONCURRENCY in flight)" >&2
    for w in c write a; do
        run "direct $w" --endpoints "$NODES" --policy token-aware bench --workload "$w" "${COMMON[@]}"
        run "gateway $w" --endpoints "$GATEWAY" bench --target http --workload "$w" "${COMMON[@]}"
    done
} >"$RESULTS"

echo
python3 - "$RESULTS" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    if "\t" in line:
        label, text = line.rstrip("\n").split("\t", 1)
        rows[label] = json.loads(text)
names = {"c": "get ONE", "write": "put QUORUM", "a": "A (50% get ONE, 50% put QUORUM)"}
print(f"{'workload':<34} {'path':<8} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
for w, name in names.items():
    for path in ("direct", "gateway"):
        r = rows[f"{path} {w}"]
        h = r["reads"] if r["reads"]["count"] else r["writes"]
        print(f"{name:<34} {path:<8} {r['ops_per_sec']:>8.0f} {h['p50_ms']:>8.2f} {h['p99_ms']:>8.2f} {sum(r['errors'].values()):>7}")
print()
print("gateway / direct:")
for w, name in names.items():
    d, g = rows[f"direct {w}"], rows[f"gateway {w}"]
    hd = d["reads"] if d["reads"]["count"] else d["writes"]
    hg = g["reads"] if g["reads"]["count"] else g["writes"]
    print(f"  {name:<34} throughput {g['ops_per_sec'] / d['ops_per_sec']:.2f}x, p50 latency {hg['p50_ms'] / hd['p50_ms']:.2f}x")
PY
echo
echo "(p50/p99: of the reads where a workload has reads, else of the writes; same machine, same run: the bench, the gateway and the nodes share its cores)"
