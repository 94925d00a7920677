#!/usr/bin/env bash
# The quiet lane on one build, mode against mode: streamd alone (no nats-server), the
# modes A and B (default off and raised) in ABBA order, a main topic flat out with a
# 500/s quiet topic beside it. One JSON line per run into A-vs-B/lane-MODE-kK.jsonl
# beside this script; lane-ab.py A B tabulates them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
BIN=${BIN:-../../../target/release}
A=${1:-off}
B=${2:-raised}
mkdir -p "$A-vs-$B"
for k in 1 10; do
    msgs=$((k == 1 ? 2000000 : 1000000))
    for round in 1 2; do
        for mode in $A $B $B $A; do
            STREAMD_QUIET_LANE=$mode "$BIN/streamctl" bench --spawn --size 128 --subs $k \
                --msgs $msgs --quiet-rate 500 --repeat 1 --json-lines "$A-vs-$B/lane-$mode-k$k.jsonl"
        done
    done
done
