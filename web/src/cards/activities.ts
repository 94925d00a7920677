import { fill, h } from "../dom";
import type { Activity } from "../gen/streamhandler/v1/payloads_pb.js";
import { plural } from "../format";
import type { DataEvent, View } from "./view";

/** Only web links become links: a `javascript:` or `data:` URL from an API must not. */
function webLink(link: string): HTMLAnchorElement | string {
  try {
    const url = new URL(link);
    if (url.protocol === "http:" || url.protocol === "https:") {
      return h("a", { href: url.href, rel: "noopener noreferrer", target: "_blank" }, link);
    }
  } catch {
    // Not a URL at all: shown as text below.
  }
  return link;
}

export class ActivityView implements View {
  readonly element = h("div", { class: "activity" });
  private latest: Activity | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "activity") this.latest = event.payload.value;
  }

  render(): void {
    const activity = this.latest;
    if (!activity) return;
    const price = activity.price === 0 ? "free" : activity.price.toFixed(2);
    fill(
      this.element,
      h("p", { class: "activity-name" }, activity.activity || "no activity"),
      h(
        "dl",
        { class: "pairs" },
        h("dt", {}, "Type"),
        h("dd", {}, activity.type || "no type"),
        h("dt", {}, "Participants"),
        h("dd", {}, plural(activity.participants, "person", "people")),
        h("dt", {}, "Price"),
        h("dd", {}, price),
        activity.accessibility !== "" && h("dt", {}, "Accessibility"),
        activity.accessibility !== "" && h("dd", {}, activity.accessibility),
        activity.link !== "" && h("dt", {}, "Link"),
        activity.link !== "" && h("dd", {}, webLink(activity.link)),
      ),
    );
  }
}
