#!/usr/bin/env bash
# ABBA pairs of streamd binaries A and B on one workload; prints CPU per delivered event.
# usage: bench/ab.sh A_BIN B_BIN SUBS RATE PAIRS (CTL names the streamctl that drives both)
set -euo pipefail
A=$1 B=$2 SUBS=$3 RATE=$4 PAIRS=$5
CTL=${CTL:-target/release/streamctl}
run() {
  $CTL bench --spawn --streamd-bin "$1" --subs $SUBS --rate $RATE --duration 10s --size 128 --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["streamd"]; print(r["server_cpu_secs"]/max(r["delivered"],1)*1e9, r["delivered"], r["lost"], r["ok"])'
}
for i in $(seq 1 $PAIRS); do
  if (( i % 2 )); then first=$A second=$B; fo=A; else first=$B second=$A; fo=B; fi
  x=$(run $first); y=$(run $second)
  if [[ $fo == A ]]; then a=$x b=$y; else a=$y b=$x; fi
  echo "pair $i: A $a | B $b | ratio B/A $(python3 -c "print(round(${b%% *}/${a%% *},3))")"
done
