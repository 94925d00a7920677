import { fill, h } from "../dom";
import type { Leaderboard } from "../gen/streamhandler/v1/payloads_pb.js";
import { count, plural } from "../format";
import type { DataEvent, View } from "./view";

/** "+16", "−7" (a real minus sign), "±0": the sign says it, not only the colour. */
function signed(change: bigint): { text: string; direction: string } {
  if (change > 0n) return { text: `+${count(change)}`, direction: "up" };
  if (change < 0n) return { text: `\u2212${count(-change)}`, direction: "down" };
  return { text: "\u00b10", direction: "same" };
}

export class LeaderboardView implements View {
  readonly element = h("div", { class: "leaderboard" });
  private latest: Leaderboard | undefined;

  update(event: DataEvent): void {
    if (event.payload.case === "leaderboard") this.latest = event.payload.value;
  }

  render(): void {
    const entries = this.latest?.entries;
    if (!entries) return;
    fill(
      this.element,
      h(
        "table",
        { class: "ranking" },
        h("caption", {}, plural(entries.length, "player")),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "#"),
            h("th", { scope: "col" }, "user"),
            h("th", { scope: "col" }, "score"),
            h("th", { scope: "col" }, "change"),
          ),
        ),
        h(
          "tbody",
          {},
          ...entries.map((entry) => {
            const change = signed(entry.change);
            return h(
              "tr",
              {},
              h("td", {}, entry.rank),
              h("th", { scope: "row" }, entry.username),
              h("td", {}, count(entry.score)),
              h("td", { class: `change ${change.direction}` }, change.text),
            );
          }),
        ),
      ),
    );
  }
}
