import { fill, h } from "../dom";
import type { Slugs } from "../gen/streamhandler/v1/payloads_pb.js";
import type { DataEvent, View } from "./view";

export class SlugsView implements View {
  readonly element = h("div", { class: "slugs" });
  private latest: Slugs | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "slugs") this.latest = event.payload.value;
  }

  render(): void {
    if (!this.latest) return;
    fill(
      this.element,
      h(
        "ul",
        { class: "slug-list" },
        ...this.latest.strings.map((text) => h("li", {}, h("code", {}, text))),
      ),
    );
  }
}
