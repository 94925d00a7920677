#!/usr/bin/env bash
# K=10 at a paced 100,000 events/s (the ladder's first rung, two runs per invocation):
# OLD (a release streamd of a5464e0, before the quiet lane) against NEW, ABBA, twice.
# One JSON line per run into DIR/BUILD-k10.jsonl beside this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
DIR=${1:?a directory for the lines}
OLD=${OLD:?a release streamd of a5464e0}
NEW=${NEW:-../../../target/release/streamd}
CTL=${CTL:-../../../target/release/streamctl}
mkdir -p "$DIR"
for round in 1 2; do
    for build in old new new old; do
        bin=$OLD
        [ $build = new ] && bin=$NEW
        "$CTL" bench --spawn --streamd-bin "$bin" --size 128 --subs 10 --rates 100000 \
            --json-lines "$DIR/$build-k10.jsonl"
    done
done
