#!/usr/bin/env bash
# bench/cluster.sh: events crossing between two cluster nodes beside the same workload
# on one node, paired in ABBA order at each rate. Appends one JSON line per run to
# bench/results/cluster.jsonl, each with "setup": "cross-node" or "one-node". The
# cross-node server CPU is both nodes' and the NATS server's together. Needs
# release builds and a NATS server with JetStream (NATS_URL, default the local one):
#
#   cargo build --release --bins && bench/cluster.sh [RATE...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${BIN:-target/release}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
SUBS=${SUBS:-10}
OUT=bench/results/cluster.jsonl
RATES=("${@:-1000 5000 10000 20000 50000}")
read -r -a RATES <<<"${RATES[*]}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$work"' EXIT

node() { # node NAME PORT [streamd flags...]
    local name=$1 port=$2
    shift 2
    "$BIN/streamd" --listen "127.0.0.1:$port" --data-dir "$work/$name" "$@" 2>"$work/$name.log" &
}
node a 50071 --cluster "$NATS_URL" --node-id bench-a
node b 50072 --cluster "$NATS_URL" --node-id bench-b
node single 50073
sleep 2

run() { # run SETUP RATE
    local setup=$1 rate=$2 at=(--addr 127.0.0.1:50073)
    [[ $setup == cross-node ]] &&
        at=(--addr 127.0.0.1:50071 --subscribe-addr 127.0.0.1:50072 --cluster-nats "$NATS_URL")
    "$BIN/streamctl" bench "${at[@]}" --subs "$SUBS" --rate "$rate" --duration 10s \
        --warmup 2s --size 128 --json |
        python3 -c 'import json,sys; r=json.load(sys.stdin); r["setup"]=sys.argv[1]; r["rate"]=int(sys.argv[2]); print(json.dumps(r))' \
            "$setup" "$rate" >>"$OUT"
}

for rate in "${RATES[@]}"; do
    run one-node "$rate"
    run cross-node "$rate"
    run cross-node "$rate"
    run one-node "$rate"
done
