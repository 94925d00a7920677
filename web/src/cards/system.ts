import { fill, h } from "../dom";
import type { SystemSnapshot } from "../gen/streamhandler/v1/streamhandler_pb.js";
import { bytes, count, duration, plural, seconds } from "../format";
import { stateWord } from "../services";
import type { DataEvent, View } from "./view";

/** The figures of a snapshot, counted the way `streamctl subscribe` counts them. */
export function figures(snapshot: SystemSnapshot) {
  const words = snapshot.services.map(stateWord);
  return {
    services: snapshot.services.length,
    running: words.filter((word) => word === "running").length,
    failing: words.filter((word) => word === "failing").length,
    backingOff: words.filter((word) => word === "backing-off").length,
    failed: words.filter((word) => word === "failed").length,
    subscribers: snapshot.subscribers,
    rss: bytes(snapshot.rssBytes),
    cpu: `${snapshot.cpuPercent.toFixed(1)}%`,
    // Whole seconds: a fraction of a second of uptime says nothing.
    uptime: duration(Math.floor(seconds(snapshot.uptime))),
    topics: count(snapshot.topics),
    tasks: count(snapshot.tasks),
    threads: snapshot.workerThreads,
  };
}

/** The `system` service's own card: its snapshot on one line (the centre card has it all). */
export class SystemView implements View {
  readonly element = h("div", { class: "system" });
  private latest: SystemSnapshot | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "system") this.latest = event.payload.value;
  }

  render(): void {
    if (!this.latest) return;
    const f = figures(this.latest);
    fill(
      this.element,
      h(
        "p",
        {},
        `${plural(f.services, "service")} (${f.running} running, ${f.failing} failing, ` +
          (f.backingOff > 0 ? `${f.backingOff} backing off, ` : "") +
          `${f.failed} failed)` +
          ` · ${plural(f.subscribers, "subscriber")} · ${plural(this.latest.topics, "topic")}` +
          ` · RSS ${f.rss} · CPU ${f.cpu} · up ${f.uptime}`,
      ),
    );
  }
}
