#!/bin/bash
# Gives every bench-quiet thread of streamctl SCHED_FIFO 50 as it appears.
while :; do
  for p in $(pgrep -x streamctl); do
    for t in /proc/$p/task/*; do
      if [[ "$(cat $t/comm 2>/dev/null)" == bench-quiet* ]]; then
        tid=${t##*/}
        chrt -p $tid 2>/dev/null | grep -q FIFO || chrt -f -p 50 $tid 2>/dev/null && echo "rt $tid" >> /tmp/rtprobe.log
      fi
    done
  done
  sleep 0.02
done
