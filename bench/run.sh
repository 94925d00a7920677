#!/usr/bin/env bash
# bench/run.sh: every figure in BENCHMARKS.md, measured again. Writes one JSON line per
# run into bench/results/ (appending; move the old ones away first), each server fresh
# per run and the systems in ABBA order. Needs release builds and nats-server:
#
#   cargo build --release --bins && bench/run.sh [STEP...]
#
# STEP is any of: ladders maxrate quiet quiet_pinned stalls names idle threads control
# (default: all). Run it on a machine with nothing else busy; it takes about an hour on two cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${BIN:-target/release}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
bench() { "$BIN/streamctl" bench --spawn --size 128 "$@"; }

ladders() {
    bench --against-nats --subs 1 \
        --rates 200000,300000,400000,500000,600000,700000,800000,900000,1000000,1100000,1200000 \
        --json-lines "$OUT/ladder-k1.jsonl"
    bench --against-nats --subs 10 \
        --rates 100000,125000,150000,175000,200000,225000,250000,275000,300000,325000,350000 \
        --json-lines "$OUT/ladder-k10.jsonl"
    bench --against-nats --subs 100 --rates 10000,15000,20000,25000,30000,35000,40000 \
        --json-lines "$OUT/ladder-k100.jsonl"
}

# Full speed, with async-nats's default subscription buffer: loss beside every rate.
maxrate() {
    for k in 1 10 100; do
        msgs=$((k == 100 ? 100000 : 1000000))
        bench --against-nats --nats-default-client --subs $k --msgs $msgs --repeat 4 \
            --json-lines "$OUT/maxrate-k$k.jsonl"
    done
}

# A quiet topic at 500/s beside a main topic published flat out, into NAME-kK.jsonl;
# ARGS go to every run.
quiet_runs() {
    local name=$1 k
    shift
    for k in 1 10; do
        bench "$@" --against-nats --subs $k --msgs 4000000 --quiet-rate 500 --repeat 4 \
            --json-lines "$OUT/$name-k$k.jsonl"
    done
}

quiet() { quiet_runs quiet; }

# The same with the server on a core of its own: the server under test (one runtime
# thread; nats-server with GOMAXPROCS=1) pinned to CPU 0, the bench client to CPU 1, so
# that the flood's client cannot take the server's core.
quiet_pinned() {
    local wrappers
    wrappers=$(mktemp -d)
    printf '#!/bin/sh\nexec taskset -c 0 %s "$@"\n' "$(realpath "$BIN/streamd")" >"$wrappers/streamd"
    printf '#!/bin/sh\nGOMAXPROCS=1 exec taskset -c 0 %s "$@"\n' \
        "$(command -v nats-server || echo /usr/sbin/nats-server)" >"$wrappers/nats-server"
    chmod +x "$wrappers/streamd" "$wrappers/nats-server"
    (
        taskset -pc 1 $BASHPID >/dev/null
        STREAMD_WORKER_THREADS=1 quiet_runs quiet-pinned \
            --streamd-bin "$wrappers/streamd" --nats-server-bin "$wrappers/nats-server"
    )
    rm -r "$wrappers"
}

# One stalled subscriber beside 10 live ones at 100,000 events/s.
stalls() {
    bench --against-nats --subs 10 --rate 100000 --duration 10s --stalled 1 --stall grpc \
        --repeat 2 --json-lines "$OUT/stall-grpc.jsonl"
    bench --against-nats --subs 10 --rate 100000 --duration 10s --stalled 1 --stall tcp \
        --repeat 2 --json-lines "$OUT/stall-tcp.jsonl"
    bench --against-nats --subs 10 --conns 2 --rate 100000 --duration 10s --stalled 1 \
        --stall grpc --stall-shared --repeat 2 --json-lines "$OUT/stall-shared.jsonl"
}

# Ever new topic names, nobody subscribed: the daemon's memory as they come.
names() {
    for n in 100000 1000000 3000000; do
        bench --names $n --json | jq -c . >>"$OUT/names.jsonl"
    done
}

# 10,000 idle Subscribe streams over 100 connections: the daemon's memory per stream,
# its peak RSS while the streams are held over its RSS before.
idle() {
    local dir port pid base peak bench_pid rss
    for _ in 1 2 3; do
        dir=$(mktemp -d)
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        RUST_LOG=warn "$BIN/streamd" --listen 127.0.0.1:$port --data-dir "$dir" --no-resume \
            2>/dev/null &
        pid=$!
        sleep 1
        base=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
        peak=$base
        STREAMD_ADDR=127.0.0.1:$port "$BIN/streamctl" bench --subs 10000 --conns 100 \
            --msgs 10 --warmup 0s --hold 10s --json >"$dir/report.json" &
        bench_pid=$!
        while kill -0 $bench_pid 2>/dev/null; do
            rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
            ((rss > peak)) && peak=$rss
            sleep 0.5
        done
        jq -c --argjson base "$base" --argjson peak "$peak" \
            '{streams: 10000, conns: 100, rss_kib_before: $base, rss_kib_peak: $peak,
              kib_per_stream: (($peak - $base) / 10000), ok: .streamd.ok}' \
            "$dir/report.json" >>"$OUT/idle-streams.jsonl"
        kill $pid
        wait $pid 2>/dev/null || true
        rm -rf "$dir"
    done
}

# The runtime's threads: the default (one per CPU) against one, in ABBA order.
threads() {
    local k rate rep order threads
    for k in 1 10; do
        rate=$((k == 1 ? 300000 : 150000))
        for rep in 0 1 2 3; do
            order=(default 1)
            ((rep % 2)) && order=(1 default)
            for threads in "${order[@]}"; do
                if [[ $threads == default ]]; then
                    bench --subs $k --rate $rate --duration 10s --json
                else
                    STREAMD_WORKER_THREADS=1 bench --subs $k --rate $rate --duration 10s --json
                fi | jq -c --arg threads "$threads" --argjson rep "$rep" \
                    '.streamd + {worker_threads: $threads, rep: $rep}' >>"$OUT/threads.jsonl"
            done
        done
    done
}

control() {
    for _ in 1 2 3; do
        bench --control 200 --json | jq -c . >>"$OUT/control.jsonl"
    done
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(ladders maxrate quiet quiet_pinned stalls names idle threads control)
for step in "${steps[@]}"; do
    echo "bench/run.sh: $step ($(date -u +%H:%M:%S))" >&2
    "$step"
done
