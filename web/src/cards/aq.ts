import { fill, h } from "../dom";
import type { AirQuality } from "../gen/streamhandler/v1/payloads_pb.js";
import { plural } from "../format";
import type { DataEvent, View } from "./view";

/** Enough to read at a glance; the rest is counted. */
const SHOWN = 20;

export class AirQualityView implements View {
  readonly element = h("div", { class: "aq" });
  private latest: AirQuality | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "airQuality") this.latest = event.payload.value;
  }

  render(): void {
    const locations = this.latest?.locations;
    if (!locations) return;
    const rest = locations.length - SHOWN;
    fill(
      this.element,
      h("p", {}, plural(locations.length, "location")),
      h(
        "ul",
        { class: "locations" },
        ...locations
          .slice(0, SHOWN)
          .map((location) =>
            h(
              "li",
              {},
              h("strong", {}, location.name || "unnamed"),
              " ",
              h(
                "span",
                { class: "muted" },
                [location.locality, location.country].filter(Boolean).join(", "),
              ),
              location.parameters.length > 0 &&
                h("span", { class: "parameters" }, location.parameters.join(", ")),
            ),
          ),
      ),
      rest > 0 && h("p", { class: "muted" }, `and ${plural(rest, "more location")}`),
    );
  }
}
