#!/usr/bin/env python3
"""Tabulates lane-ab.sh A B's runs (in A-vs-B/): per mode and K, medians (ranges) of the quiet topic's
p50/p99, the main topic's delivered/s and the server's CPU per delivered event, and the
median of paired ratios B/A (runs paired in the order they ran, ABBA)."""
import json, statistics, sys
from pathlib import Path

here = Path(__file__).parent
a, b = (sys.argv[1:3] if len(sys.argv) > 2 else ("off", "raised"))

def runs(mode, k):
    path = here / f"{a}-vs-{b}" / f"lane-{mode}-k{k}.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]

def spread(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

figures = {
    "quiet p50 ms": lambda r: r["quiet"]["latency"]["p50_us"] / 1000,
    "quiet p99 ms": lambda r: r["quiet"]["latency"]["p99_us"] / 1000,
    "main delivered/s": lambda r: r["delivered_rate"],
    "CPU ns/delivered": lambda r: r["server_cpu_ns_per_delivered"],
}
formats = {"main delivered/s": "{:,.0f}", "CPU ns/delivered": "{:.0f}"}
print(f"| K | figure | {a} | {b} | {b}/{a}, paired |")
print("| --- | --- | --- | --- | --- |")
for k in (1, 10):
    ra, rb = runs(a, k), runs(b, k)
    lost = sum(r["lost"] + r["quiet"]["lost"] for r in ra + rb)
    for name, get in figures.items():
        fmt = formats.get(name, "{:.2f}")
        ratios = [get(y) / get(x) for x, y in zip(ra, rb)]
        print(f"| {k} | {name} | {spread([get(r) for r in ra], fmt)} | "
              f"{spread([get(r) for r in rb], fmt)} | {spread(ratios, '{:.2f}')}× |")
    print(f"| {k} | runs; events lost (main and quiet) | {len(ra)} | {len(rb)} | {lost} lost |")
