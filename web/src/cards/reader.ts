import { fill, h } from "../dom";
import type { Line, Text } from "../gen/streamhandler/v1/payloads_pb.js";
import { basename, plural } from "../format";
import type { DataEvent, View } from "./view";

/** Lines kept in follow mode: a screenful, not the whole file. */
const KEPT_LINES = 50;

export class ReaderView implements View {
  readonly element = h("div", { class: "reader" });
  private text: Text | undefined;
  private lines: Line[] = [];

  update(event: DataEvent): void {
    const payload = event.payload;
    if (payload.case === "text") {
      this.text = payload.value;
      this.lines = [];
    } else if (payload.case === "line") {
      this.text = undefined;
      // A rotated or truncated file starts again from line 1: so does the list.
      const previous = this.lines[this.lines.length - 1];
      if (
        previous &&
        (previous.path !== payload.value.path || payload.value.number <= previous.number)
      ) {
        this.lines = [];
      }
      this.lines.push(payload.value);
      if (this.lines.length > KEPT_LINES) this.lines.splice(0, this.lines.length - KEPT_LINES);
    }
  }

  render(): void {
    if (this.text) {
      const lineCount = this.text.body.replace(/\n$/, "").split("\n").length;
      fill(
        this.element,
        h("h3", { class: "poem-title" }, this.text.title || basename(this.text.path)),
        h(
          "p",
          { class: "muted small" },
          `${basename(this.text.path)} · ${plural(lineCount, "line")}`,
        ),
        h("pre", { class: "poem" }, this.text.body),
      );
    } else if (this.lines.length > 0) {
      const list = h(
        "ol",
        { class: "followed" },
        ...this.lines.map((line) =>
          h(
            "li",
            {},
            h("span", { class: "line-number" }, String(line.number)),
            h("span", {}, line.text),
          ),
        ),
      );
      fill(
        this.element,
        h("p", { class: "muted small" }, `following ${basename(this.lines[0]!.path)}`),
        list,
      );
      // The newest line is the one to read.
      list.scrollTop = list.scrollHeight;
    }
  }
}
