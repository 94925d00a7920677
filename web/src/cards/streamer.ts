import { fill, h } from "../dom";
import type { Points } from "../gen/streamhandler/v1/payloads_pb.js";
import { plural } from "../format";
import { scatterPlot } from "../plot";
import type { DataEvent, View } from "./view";

export class StreamerView implements View {
  readonly element = h("div", { class: "streamer" });
  private latest: Points | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "points") this.latest = event.payload.value;
  }

  render(): void {
    const series = this.latest?.series;
    if (!series) return;
    const points = series.reduce((total, one) => total + one.points.length, 0);
    fill(
      this.element,
      scatterPlot(series),
      h(
        "p",
        { class: "muted small" },
        `${plural(series.length, "series", "series")}, ${plural(points, "point")}`,
      ),
    );
  }
}
