import { fill, h } from "../dom";
import type { Emoji } from "../gen/streamhandler/v1/payloads_pb.js";
import type { DataEvent, View } from "./view";

export class EmojiView implements View {
  readonly element = h("div", { class: "emoji" });
  private latest: Emoji | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "emoji") this.latest = event.payload.value;
  }

  render(): void {
    const emoji = this.latest;
    if (!emoji) return;
    // The name is read out instead of the glyph, which screen readers name unevenly.
    fill(
      this.element,
      h("p", { class: "emoji-character", "aria-hidden": "true" }, emoji.character || "?"),
      h("p", { class: "emoji-name" }, emoji.name || "no name"),
      h(
        "p",
        { class: "muted" },
        [emoji.category, emoji.group].filter(Boolean).join(" / ") || "no category",
      ),
      emoji.unicode.length > 0 && h("p", { class: "muted small" }, emoji.unicode.join(" ")),
    );
  }
}
