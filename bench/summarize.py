#!/usr/bin/env python3
"""Prints the tables of BENCHMARKS.md from the JSON lines bench/run.sh wrote.

    python3 bench/summarize.py [bench/results]

Every figure comes from the raw lines: medians over runs, and ratios as the median and
range of the per-repetition ratios (streamd over nats) from pairs in which both runs
were complete. Loss is printed beside every rate. Standard library only.
"""

import itertools
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
SUSTAINED_P99_US = 100_000


def lines(name):
    path = RESULTS / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sustained(run):
    return run["ok"] and run["lost"] == 0 and run["latency"]["p99_us"] < SUSTAINED_P99_US


def rate(r):
    return "max" if r == 0 else f"{r:,}/s"


def ms(us):
    return f"{us / 1000:.1f} ms" if us >= 10_000 else f"{us / 1000:.2f} ms"


def spread(values, fmt="{:.2f}"):
    values = sorted(v for v in values if v is not None)
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


def paired(runs, key):
    """Per-repetition ratios streamd/nats of key(run), from pairs both ok."""
    by_rep = defaultdict(dict)
    for run in runs:
        by_rep[run["rep"]][run["system"]] = run
    ratios = []
    for pair in by_rep.values():
        s, n = pair.get("streamd"), pair.get("nats")
        if s and n and s["ok"] and n["ok"]:
            a, b = key(s), key(n)
            if a is not None and b:
                ratios.append(a / b)
    return ratios


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def by_rate(runs):
    rates = defaultdict(list)
    for run in runs:
        rates[run["rate"]].append(run)
    return dict(sorted(rates.items()))


def highest(runs, system):
    best = None
    for r, at_rate in by_rate(runs).items():
        mine = [x for x in at_rate if x["system"] == system]
        if mine and all(sustained(x) for x in mine):
            best = r
        elif mine:
            break
    return best


def cpu(run):
    return run.get("server_cpu_ns_per_delivered")


def loss_list(runs):
    return ", ".join(f"{x['lost']:,}" for x in runs)


def ladders():
    print("### Highest sustained lossless rate\n")
    rows = []
    for k in (1, 10, 100):
        runs = lines(f"ladder-k{k}.jsonl")
        if not runs:
            continue
        s, n = highest(runs, "streamd"), highest(runs, "nats")
        top = max(by_rate(runs))
        ratio = f"{s / n:.2f}×" if s and n else "—"
        rows.append([k, rate(s) if s else "none", rate(n) if n else "none", ratio,
                     "yes" if s == top else "no"])
    print(table(["K", "streamd", "nats-server", "streamd/nats", "streamd at the ladder's top"], rows))
    for k in (1, 10, 100):
        runs = lines(f"ladder-k{k}.jsonl")
        if not runs:
            continue
        print(f"\n#### K = {k}: every run (loss, p99, server CPU per delivered event)\n")
        rows = []
        for r, at_rate in by_rate(runs).items():
            cells = [rate(r)]
            for system in ("streamd", "nats"):
                mine = sorted((x for x in at_rate if x["system"] == system), key=lambda x: x["rep"])
                cells.append("; ".join(
                    f"{x['lost']:,} lost, {ms(x['latency']['p99_us'])}, "
                    f"{cpu(x):.0f} ns" if cpu(x) is not None else f"{x['lost']:,} lost"
                    for x in mine) or "—")
            cells.append(spread(paired(at_rate, cpu), "{:.2f}×"))
            cells.append(spread(paired(at_rate, lambda x: x["latency"]["p99_us"]), "{:.2f}×"))
            rows.append(cells)
        print(table(["rate", "streamd runs", "nats runs", "CPU/delivered streamd/nats",
                     "p99 streamd/nats"], rows))


def cpu_table():
    print("### Server CPU per delivered event\n")
    rows = []
    for k in (1, 10, 100):
        runs = lines(f"ladder-k{k}.jsonl")
        both = [r for r, at in by_rate(runs).items()
                if {x["system"] for x in at if sustained(x)} == {"streamd", "nats"}
                and all(sustained(x) for x in at)]
        for r in both:
            at = by_rate(runs)[r]
            rows.append([k, rate(r),
                         spread([cpu(x) for x in at if x["system"] == "streamd"], "{:.0f}"),
                         spread([cpu(x) for x in at if x["system"] == "nats"], "{:.0f}"),
                         spread(paired(at, cpu), "{:.2f}×")])
    print(table(["K", "rate (both sustained)", "streamd ns", "nats ns", "streamd/nats (paired)"], rows))


def latency_table():
    print("### Latency from the intended send time\n")
    rows = []
    for k, r in ((1, 400_000), (10, 100_000), (10, 150_000), (100, 10_000)):
        at = by_rate(lines(f"ladder-k{k}.jsonl")).get(r, [])
        for system in ("streamd", "nats"):
            mine = [x for x in at if x["system"] == system]
            if not mine:
                continue
            lat = lambda q: spread([x["latency"][q] / 1000 for x in mine], "{:.2f}")
            rows.append([k, rate(r), system, lat("p50_us"), lat("p99_us"), lat("p999_us"),
                         lat("max_us"), loss_list(mine)])
    print(table(["K", "rate", "system", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "lost per run"], rows))


def runs_with_loss(runs):
    """Each run's delivered/s with its loss beside it."""
    return "; ".join(f"{x['delivered_rate']:,.0f} ({x['lost']:,} lost)" for x in runs)


def complete(runs):
    return [x for x in runs if x["ok"]]


def maxrate_table():
    print("### Full speed, nats-server with async-nats's default client\n")
    rows = []
    for k in (1, 10, 100):
        runs = lines(f"maxrate-k{k}.jsonl")
        for system in ("streamd", "nats"):
            mine = sorted((x for x in runs if x["system"] == system), key=lambda x: x["rep"])
            if not mine:
                continue
            deliveries = sum(x["msgs"] * x["subs"] for x in mine)
            lost = sum(x["lost"] for x in mine)
            rows.append([k, system, runs_with_loss(mine),
                         f"{lost:,} of {deliveries:,} ({100 * lost / deliveries:.2f}%)",
                         spread([x["delivered_rate"] for x in complete(mine)], "{:,.0f}"),
                         spread([cpu(x) for x in complete(mine)], "{:.0f}"),
                         spread([x["latency"]["p99_us"] / 1000 for x in mine], "{:.1f}")])
    print(table(["K", "system", "each run: delivered/s (lost)", "lost in all",
                 "delivered/s, complete runs", "CPU ns/delivered, complete runs",
                 "p99 ms"], rows))


def quiet_table():
    print("### A quiet topic (500/s) while another runs flat out\n")
    rows = []
    placements = (("shared", "quiet"), ("server on CPU 0, client on CPU 1", "quiet-pinned"))
    for (cores, name), k in itertools.product(placements, (1, 10)):
        runs = lines(f"{name}-k{k}.jsonl")
        for system in ("streamd", "nats"):
            mine = [x for x in runs if x["system"] == system and x.get("quiet")]
            if not mine:
                continue
            q = lambda key: spread([x["quiet"]["latency"][key] / 1000 for x in mine], "{:.2f}")
            rows.append([cores, k, system, q("p50_us"), q("p99_us"), q("max_us"),
                         ", ".join(str(x["quiet"]["lost"]) for x in mine),
                         ", ".join(str(x["quiet"]["lagged"]) for x in mine),
                         runs_with_loss(mine)])
    print(table(["cores", "main K", "system", "quiet p50 ms", "quiet p99 ms", "quiet max ms",
                 "quiet lost per run", "quiet lagged", "main: each run delivered/s (lost)"],
                rows))


def stall_table():
    print("### One stalled subscriber beside 10 live ones at 100,000 events/s\n")
    rows = []
    for name, label in (("stall-grpc", "gRPC: stream held unread"),
                        ("stall-tcp", "TCP: socket not read"),
                        ("stall-shared", "gRPC, on the live streams' connections")):
        runs = lines(f"{name}.jsonl")
        for system in ("streamd", "nats"):
            mine = [x for x in runs if x["system"] == system]
            if not mine:
                continue
            if all(x.get("stall") is None for x in mine):
                rows.append([label, system, "not possible", "—", "—", "—"])
                continue
            growth = [x["server_rss_kib_after"] - x["server_rss_kib_before"]
                      for x in mine if x.get("server_rss_kib_after")]
            rows.append([label, system, runs_with_loss(mine),
                         spread([x["latency"]["p99_us"] / 1000 for x in mine], "{:.1f}"),
                         spread([g / 1024 for g in growth], "{:.1f}")])
    print(table(["stall", "system", "live: each run delivered/s (lost)", "live p99 ms",
                 "server RSS growth MiB"], rows))


def names_table():
    print("### Publishing to ever new topic names\n")
    rows = [[f"{x['names']:,}", f"{x['publish_rate']:,.0f}", x["rss_kib_before"],
             x["rss_kib_peak"], x["rss_kib_after"], x["topics_after"]]
            for x in lines("names.jsonl")]
    print(table(["names", "published/s", "RSS before KiB", "RSS peak KiB", "RSS after KiB",
                 "topics held after"], rows))


def idle_table():
    print("### Idle Subscribe streams\n")
    rows = [[x["streams"], x["conns"], x["rss_kib_before"], x["rss_kib_peak"],
             f"{x['kib_per_stream']:.2f}", x["ok"]] for x in lines("idle-streams.jsonl")]
    print(table(["streams", "connections", "RSS before KiB", "RSS peak KiB", "KiB per stream",
                 "every stream live"], rows))


def threads_table():
    print("### streamd's runtime threads: one per CPU (the default) against one\n")
    runs = lines("threads.jsonl")
    rows = []
    for k in sorted({x["subs"] for x in runs}):
        mine = [x for x in runs if x["subs"] == k]
        by_rep = defaultdict(dict)
        for x in mine:
            by_rep[x["rep"]][x["worker_threads"]] = x
        ratios = [p["1"]["server_cpu_ns_per_delivered"] / p["default"]["server_cpu_ns_per_delivered"]
                  for p in by_rep.values() if p.get("1", {}).get("ok") and p.get("default", {}).get("ok")]
        for threads in ("default", "1"):
            these = [x for x in mine if x["worker_threads"] == threads]
            rows.append([k, rate(these[0]["rate"]), threads,
                         spread([cpu(x) for x in these], "{:.0f}"),
                         spread([x["latency"]["p99_us"] / 1000 for x in these], "{:.2f}"),
                         loss_list(these),
                         spread(ratios, "{:.2f}×") if threads == "1" else ""])
    print(table(["K", "rate", "threads", "CPU ns/delivered", "p99 ms", "lost per run",
                 "one/default (paired)"], rows))


def control_table():
    print("### Control plane\n")
    runs = lines("control.jsonl")
    rows = []
    for key, label in (("start", "StartService"), ("stop", "StopService"),
                       ("first_event", "reply → first event")):
        rows.append([label, spread([x[key]["p50_us"] for x in runs], "{:.0f} µs"),
                     spread([x[key]["p99_us"] for x in runs], "{:.0f} µs")])
    print(table(["", "p50", "p99"], rows))


for section in (ladders, cpu_table, latency_table, maxrate_table, quiet_table, stall_table,
                names_table, idle_table, threads_table, control_table):
    section()
    print()
