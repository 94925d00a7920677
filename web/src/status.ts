// The page's own state, at the top: whether the event stream is live, and whether this
// page fell behind and missed events.
import { fill, h } from "./dom";
import type { Lagged } from "./gen/streamhandler/v1/streamhandler_pb.js";
import { count, plural } from "./format";

/** The connection banner: `data-connection` says the state for tests and styles. */
export class ConnectionBanner {
  constructor(private readonly element: HTMLElement) {}

  private set(state: string, text: string): void {
    this.element.dataset.connection = state;
    this.element.textContent = text;
  }

  connecting(): void {
    this.set("connecting", "Connecting to streamd…");
  }

  live(): void {
    this.set("live", "Live: following every topic.");
  }

  reconnecting(reason: string, delayMs: number): void {
    this.set(
      "reconnecting",
      `Reconnecting… the event stream ended (${reason}); next try in ${(delayMs / 1000).toFixed(1)} s.`,
    );
  }

  waitingForToken(): void {
    this.set("token", "Waiting for the daemon's token.");
  }
}

/** Events this page missed, added up until the reader dismisses the notice. */
export class LagNotice {
  private missed = 0n;
  private readonly byTopic = new Map<string, bigint>();
  private readonly element = h("div", { class: "notice lagged", "data-lagged": "", hidden: true });

  constructor(container: HTMLElement) {
    container.append(this.element);
  }

  add(lagged: Lagged): void {
    this.missed += lagged.missed;
    for (const skipped of lagged.topics) {
      this.byTopic.set(skipped.topic, (this.byTopic.get(skipped.topic) ?? 0n) + skipped.missed);
    }
    const topics = [...this.byTopic].map(
      ([topic, missed]) => `${topic || "(no topic)"} ${count(missed)}`,
    );
    const dismiss = h("button", { type: "button", "data-action": "dismiss" }, "Dismiss");
    dismiss.addEventListener("click", () => this.clear());
    fill(
      this.element,
      h(
        "p",
        {},
        h("strong", {}, "Missed events. "),
        `This page fell behind the daemon and skipped ${plural(this.missed, "event")}`,
        topics.length > 0 ? `: ${topics.join(", ")}.` : ".",
        " The cards show the newest events again.",
      ),
      dismiss,
    );
    this.element.hidden = false;
  }

  private clear(): void {
    this.missed = 0n;
    this.byTopic.clear();
    this.element.hidden = true;
    fill(this.element);
  }
}
