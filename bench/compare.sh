#!/usr/bin/env bash
# Side-by-side: a 3-node ringkv, a 3-node etcd and one Redis on 127.0.0.1,
# the same workloads through `ringkv bench`, one table.
#
# Installs etcd-server, etcd-client and redis-server with apt-get when missing (needs
# root), stops everything it started on exit, and leaves nothing running.
#
#   bench/compare.sh                 # 10 s per workload
#   DURATION=30s bench/compare.sh
#   BASELINE=/path/to/old/ringkv bench/compare.sh   # adds an older build's write rows
#
# Same settings for every target: 100-byte values, 16-byte keys, 10,000 keys
# (zipfian), 64 requests in flight over 3 connections. ringkv's client
# coalesces concurrent requests to one node into Kv.Batch calls (its
# default); the "no coalescing" rows send every request as its own call, as
# the etcd and Redis clients here do. ringkv runs with
# durability "group" (fdatasync group commit), on fjall (the default), on
# redb behind the commit log, and on redb without it; etcd fsyncs its WAL; Redis is a single server
# without persistence, the non-replicated ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
WORK="$(mktemp -d -t ringkv-compare-XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

need() { command -v "$1" >/dev/null 2>&1; }
if ! need etcd || ! need etcdctl || ! need redis-server; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: etcd, etcdctl or redis-server is missing; run as root so this script can apt-get install etcd-server etcd-client redis-server" >&2
        exit 2
    fi
    echo "== installing etcd-server, etcd-client and redis-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client redis-server >/dev/null
fi

echo "== building ringkv (release)"
cargo build -q --release -p ringkv
RINGKV=target/release/ringkv

port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_for() { # what, command...
    local what="$1"; shift
    for _ in $(seq 1 200); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "error: $what did not come up; logs are in $WORK" >&2
    exit 2
}

for p in 7301 7302 7303 7311 7312 7313 7331 7332 7333 22379 22380 23379 23380 24379 24380 26390; do
    port_free "$p" || { echo "error: port $p is in use; stop whatever holds it" >&2; exit 2; }
done

echo "== starting etcd x3, redis x1, ringkv x3 (work dir $WORK)"
CLUSTER="e1=http://127.0.0.1:22380,e2=http://127.0.0.1:23380,e3=http://127.0.0.1:24380"
for i in 1 2 3; do
    c=$((i * 1000 + 21379)); p=$((c + 1))
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
        --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token ringkv-compare \
        >"$WORK/etcd$i.log" 2>&1 &
    PIDS+=($!)
done
ETCD="127.0.0.1:22379,127.0.0.1:23379,127.0.0.1:24379"
redis-server --port 26390 --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
"$RINGKV" cluster --nodes 3 --base-port 7301 --data-dir "$WORK/ringkv" >"$WORK/ringkv.log" 2>&1 &
PIDS+=($!)
RINGKV_EP="127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303"
# The same cluster on redb without the commit log: every group commit is
# then a durable engine commit (the first wave's write path), for the ratio.
"$RINGKV" cluster --nodes 3 --base-port 7311 --data-dir "$WORK/ringkv-nolog" --serve-arg=--storage=redb --serve-arg=--commit-log=off >"$WORK/ringkv-nolog.log" 2>&1 &
PIDS+=($!)
NOLOG_EP="127.0.0.1:7311,127.0.0.1:7312,127.0.0.1:7313"
# The same cluster on redb behind the commit log.
"$RINGKV" cluster --nodes 3 --base-port 7331 --data-dir "$WORK/ringkv-redb" --serve-arg=--storage=redb >"$WORK/ringkv-redb.log" 2>&1 &
PIDS+=($!)
REDB_EP="127.0.0.1:7331,127.0.0.1:7332,127.0.0.1:7333"
# An older build, for before/after ratios measured in the same run.
BASE_EP="127.0.0.1:7321,127.0.0.1:7322,127.0.0.1:7323"
if [ -n "${BASELINE:-}" ]; then
    for p in 7321 7322 7323; do
        port_free "$p" || { echo "error: port $p is in use; stop whatever holds it" >&2; exit 2; }
    done
    "$BASELINE" cluster --nodes 3 --base-port 7321 --data-dir "$WORK/ringkv-base" >"$WORK/ringkv-base.log" 2>&1 &
    PIDS+=($!)
fi

wait_for etcd etcdctl --endpoints "$ETCD" endpoint health
wait_for redis redis-cli -p 26390 ping
ringkv_ready() { # every node normal and up
    "$RINGKV" --endpoints "$1" status --json | python3 -c 'import json,sys; n=json.load(sys.stdin)["nodes"]; sys.exit(not (len(n) == 3 and all(x["state"] == "normal" and x["liveness"] == "up" for x in n)))'
}
wait_for ringkv ringkv_ready "$RINGKV_EP"
wait_for "ringkv without the commit log" ringkv_ready "$NOLOG_EP"
wait_for "ringkv on redb" ringkv_ready "$REDB_EP"
if [ -n "${BASELINE:-}" ]; then wait_for "the baseline ringkv" ringkv_ready "$BASE_EP"; fi

COMMON=(--duration "$DURATION" --keys 10000 --value-size 100 --concurrency 64)
run() { # label, then ringkv args
    local label="$1"; shift
    echo "   $label" >&2
    "$RINGKV" --json "$@" | sed "s/^/$label\t/"
}
RESULTS="$WORK/results.tsv"
{
    echo "== loading 10,000 keys into each" >&2
    "$RINGKV" --endpoints "$RINGKV_EP" bench --workload write --ops 1 --load --keys 10000 >/dev/null
    "$RINGKV" --endpoints "$NOLOG_EP" bench --workload write --ops 1 --load --keys 10000 >/dev/null
    "$RINGKV" --endpoints "$REDB_EP" bench --workload write --ops 1 --load --keys 10000 >/dev/null
    if [ -n "${BASELINE:-}" ]; then "$RINGKV" --endpoints "$BASE_EP" bench --workload write --ops 1 --load --keys 10000 >/dev/null; fi
    "$RINGKV" --endpoints "$ETCD" bench --target etcd --workload write --ops 1 --load --keys 10000 >/dev/null
    "$RINGKV" --endpoints 127.0.0.1:26390 bench --target redis --workload write --ops 1 --load --keys 10000 >/dev/null
    echo "== measuring ($DURATION each)" >&2
    run "ringkv ping (gRPC floor)" --endpoints "$RINGKV_EP" bench --workload ping "${COMMON[@]}"
    run "ringkv put QUORUM" --endpoints "$RINGKV_EP" --policy token-aware bench --workload write --write-level quorum "${COMMON[@]}"
    run "ringkv put ONE" --endpoints "$RINGKV_EP" --policy token-aware bench --workload write --write-level one "${COMMON[@]}"
    run "ringkv put QUORUM, no coalescing" --endpoints "$RINGKV_EP" --policy token-aware bench --workload write --write-level quorum --no-coalesce "${COMMON[@]}"
    run "ringkv put ONE, no coalescing" --endpoints "$RINGKV_EP" --policy token-aware bench --workload write --write-level one --no-coalesce "${COMMON[@]}"
    run "ringkv put QUORUM, redb, no log" --endpoints "$NOLOG_EP" --policy token-aware bench --workload write --write-level quorum "${COMMON[@]}"
    run "ringkv put ONE, redb, no log" --endpoints "$NOLOG_EP" --policy token-aware bench --workload write --write-level one "${COMMON[@]}"
    run "ringkv put QUORUM, redb + log" --endpoints "$REDB_EP" --policy token-aware bench --workload write --write-level quorum "${COMMON[@]}"
    run "ringkv put ONE, redb + log" --endpoints "$REDB_EP" --policy token-aware bench --workload write --write-level one "${COMMON[@]}"
    if [ -n "${BASELINE:-}" ]; then
        run "baseline put QUORUM" --endpoints "$BASE_EP" --policy token-aware bench --workload write --write-level quorum "${COMMON[@]}"
        run "baseline put ONE" --endpoints "$BASE_EP" --policy token-aware bench --workload write --write-level one "${COMMON[@]}"
    fi
    run "etcd put" --endpoints "$ETCD" bench --target etcd --workload write "${COMMON[@]}"
    run "redis set" --endpoints 127.0.0.1:26390 bench --target redis --workload write "${COMMON[@]}"
    run "ringkv get ONE" --endpoints "$RINGKV_EP" --policy token-aware bench --workload c --read-level one "${COMMON[@]}"
    run "ringkv get ONE, no coalescing" --endpoints "$RINGKV_EP" --policy token-aware bench --workload c --read-level one --no-coalesce "${COMMON[@]}"
    run "etcd get serializable" --endpoints "$ETCD" bench --target etcd --workload c "${COMMON[@]}"
    run "etcd get linearizable" --endpoints "$ETCD" bench --target etcd --workload c --etcd-linearizable "${COMMON[@]}"
    run "redis get" --endpoints 127.0.0.1:26390 bench --target redis --workload c "${COMMON[@]}"
    run "ringkv A (QUORUM put, ONE get)" --endpoints "$RINGKV_EP" --policy token-aware bench --workload a "${COMMON[@]}"
    run "ringkv A, no coalescing" --endpoints "$RINGKV_EP" --policy token-aware bench --workload a --no-coalesce "${COMMON[@]}"
    run "etcd A (serializable get)" --endpoints "$ETCD" bench --target etcd --workload a "${COMMON[@]}"
    run "ringkv put QUORUM, 1 in flight" --endpoints "$RINGKV_EP" --policy token-aware bench --workload write --duration "$DURATION" --keys 10000 --concurrency 1
    run "ringkv put ONE, 1 in flight" --endpoints "$RINGKV_EP" --policy token-aware bench --workload write --write-level one --duration "$DURATION" --keys 10000 --concurrency 1
    run "ringkv QUORUM, 1 in flight, redb, no log" --endpoints "$NOLOG_EP" --policy token-aware bench --workload write --duration "$DURATION" --keys 10000 --concurrency 1
    run "ringkv QUORUM, 1 in flight, redb + log" --endpoints "$REDB_EP" --policy token-aware bench --workload write --duration "$DURATION" --keys 10000 --concurrency 1
    if [ -n "${BASELINE:-}" ]; then
        run "baseline QUORUM, 1 in flight" --endpoints "$BASE_EP" --policy token-aware bench --workload write --duration "$DURATION" --keys 10000 --concurrency 1
    fi
    run "etcd put, 1 in flight" --endpoints "$ETCD" bench --target etcd --workload write --duration "$DURATION" --keys 10000 --concurrency 1
} >"$RESULTS"

echo
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [line.rstrip("\n").split("\t", 1) for line in open(sys.argv[1]) if "\t" in line]
print(f"{'workload':<40} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>8}")
for label, text in rows:
    r = json.loads(text)
    h = r["writes"] if r["writes"]["count"] else r["reads"]
    errors = sum(r["errors"].values())
    print(f"{label:<40} {r['ops_per_sec']:>9.0f} {h['p50_ms']:>8.2f} {h['p99_ms']:>8.2f} {errors:>8}")
PY
echo
echo "(same machine, same run; only the ratios between rows mean anything)"
