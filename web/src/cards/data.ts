import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { fill, h } from "../dom";
import type { DataEvent, View } from "./view";

/** Deeper objects are summarised: a card is for reading at a glance. */
const MAX_DEPTH = 3;
const MAX_ITEMS = 40;
const MAX_TEXT = 200;

function scalar(value: JsonValue): string | null {
  if (value === null) return "null";
  if (typeof value === "object") return null;
  const text = String(value);
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}… (${text.length} characters)` : text;
}

function valueOf(value: JsonValue, depth: number): Node | string {
  const text = scalar(value);
  if (text !== null) return text;
  if (Array.isArray(value)) {
    const scalars = value.map(scalar);
    if (scalars.every((item) => item !== null)) return scalars.join(", ");
    if (depth >= MAX_DEPTH) return `[${value.length} items]`;
    return h(
      "ol",
      { class: "nested" },
      ...value.slice(0, MAX_ITEMS).map((item) => h("li", {}, valueOf(item, depth + 1))),
    );
  }
  if (depth >= MAX_DEPTH) return `{${Object.keys(value as JsonObject).length} fields}`;
  return pairs(value as JsonObject, depth + 1);
}

function pairs(object: JsonObject, depth: number): HTMLDListElement {
  const entries = Object.entries(object);
  const list = h("dl", { class: depth === 0 ? "pairs" : "pairs nested" });
  for (const [key, value] of entries.slice(0, MAX_ITEMS)) {
    list.append(h("dt", {}, key), h("dd", {}, valueOf(value, depth)));
  }
  if (entries.length > MAX_ITEMS)
    list.append(h("dt", {}, "…"), h("dd", {}, `${entries.length - MAX_ITEMS} more`));
  return list;
}

/** A Publish event's free-form data, as a compact list of keys and values. */
export class DataView implements View {
  readonly element = h("div", { class: "data" });
  private latest: JsonObject | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "data") this.latest = event.payload.value;
  }

  render(): void {
    if (!this.latest) return;
    if (Object.keys(this.latest).length === 0)
      fill(this.element, h("p", { class: "muted" }, "(no fields)"));
    else fill(this.element, pairs(this.latest, 0));
  }
}
