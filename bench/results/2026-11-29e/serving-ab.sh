#!/usr/bin/env bash
# streamd's serving before the quiet lane (tonic's serve loop; OLD, a release build of
# a5464e0) against after (NEW, a594d18, its own HTTP/2 serving with the lane at its
# default), ABBA, flat out at K=1 and K=10 with no quiet topic. One JSON line per run
# into serving/BUILD-kK.jsonl beside this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
OLD=${OLD:?a release streamd of a5464e0}
NEW=${NEW:-../../../target/release/streamd}
CTL=${CTL:-../../../target/release/streamctl}
mkdir -p serving
for k in 1 10; do
    msgs=$((k == 1 ? 2000000 : 1000000))
    for round in 1 2; do
        for build in old new new old; do
            bin=$OLD
            [ $build = new ] && bin=$NEW
            "$CTL" bench --spawn --streamd-bin "$bin" --size 128 --subs $k --msgs $msgs \
                --repeat 1 --json-lines "serving/$build-k$k.jsonl"
        done
    done
done
