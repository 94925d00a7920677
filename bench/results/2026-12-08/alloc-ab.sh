#!/usr/bin/env bash
# ABBA pairs of two streamd builds, one JSON line per run: glibc's malloc (A) against
# jemalloc (B), the same commit otherwise. usage: alloc-ab.sh A_BIN B_BIN CTL OUT PAIRS
set -euo pipefail
A=$1 B=$2 CTL=$3 OUT=$4 PAIRS=$5
run() { # BIN LABEL WORKLOAD ARGS...
  local bin=$1 label=$2 workload=$3; shift 3
  "$CTL" bench --spawn --streamd-bin "$bin" --size 128 --json "$@" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["allocator"]=sys.argv[1]; r["workload"]=sys.argv[2]; print(json.dumps(r))' "$label" "$workload" >>"$OUT"
}
for workload in "k1-20000:--subs 1 --rate 20000 --duration 10s" \
                "k10-100000:--subs 10 --rate 100000 --duration 10s" \
                "k1-full:--subs 1 --msgs 2000000"; do
  name=${workload%%:*} args=${workload#*:}
  for i in $(seq 1 "$PAIRS"); do
    if (( i % 2 )); then run "$A" glibc "$name" $args; run "$B" jemalloc "$name" $args
    else run "$B" jemalloc "$name" $args; run "$A" glibc "$name" $args; fi
  done
done
