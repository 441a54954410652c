#!/usr/bin/env bash
# Restart time and disk size of one node after KEYS writes (default 1M,
# 100-byte values, replication factor 1), killed with -9 right after the
# load: redb with and without the commit log, and fjall. The restart replays what the
# engine had not made durable; "restart" is the time until the node answers
# `status` again and holds every key.
#
#   bench/restart.sh
#   KEYS=200000 bench/restart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS="${KEYS:-1000000}"
PORT="${PORT:-7451}"
WORK="$(mktemp -d -t ringkv-restart-XXXXXX)"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

(exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && { echo "error: port $PORT is in use; set PORT" >&2; exit 2; }
echo "== building ringkv (release)" >&2
cargo build -q --release -p ringkv
R=target/release/ringkv
EP="127.0.0.1:$PORT"

keys_held() { "$R" --endpoints "$EP" status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["local_keys"])' 2>/dev/null || echo 0; }
start_node() { # setup: redb+log, redb or fjall
    case "$1" in
        redb+log) flags=(--storage redb --commit-log on) ;;
        redb) flags=(--storage redb --commit-log off) ;;
        fjall) flags=(--storage fjall) ;;
    esac
    "$R" serve --id r1 --listen "$EP" --data-dir "$WORK/$1" --replication-factor 1 "${flags[@]}" >>"$WORK/$1.log" 2>&1 &
    PID=$!
}
now() { date +%s.%N; }

printf '%-12s %10s %12s %12s %12s\n' "engine" "keys" "load s" "disk MiB" "restart s"
for log in redb+log redb fjall; do
    start_node "$log"
    for _ in $(seq 1 300); do "$R" --endpoints "$EP" status >/dev/null 2>&1 && break; sleep 0.1; done
    t0=$(now)
    "$R" --endpoints "$EP" bench --workload write --load --ops 1 --keys "$KEYS" --concurrency 64 >/dev/null
    t1=$(now)
    kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    disk=$(du -sm "$WORK/$log" | cut -f1)
    t2=$(now)
    start_node "$log"
    held=0
    for _ in $(seq 1 6000); do
        held=$(keys_held)
        [ "$held" -ge "$KEYS" ] && break
        sleep 0.05
    done
    t3=$(now)
    [ "$held" -ge "$KEYS" ] || { echo "error: after the restart the node holds $held of $KEYS keys; log: $WORK/$log.log" >&2; exit 1; }
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    printf '%-12s %10d %12.1f %12d %12.2f\n' "$log" "$KEYS" "$(python3 -c "print($t1 - $t0)")" "$disk" "$(python3 -c "print($t3 - $t2)")"
done
