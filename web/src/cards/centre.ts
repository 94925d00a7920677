// The centre of the grid: Start all / Stop all, and the daemon's own figures from the
// latest `system` snapshot.
import { fill, h } from "../dom";
import type { SystemSnapshot } from "../gen/streamhandler/v1/streamhandler_pb.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { errorText } from "../client";
import { time } from "../format";
import type { StateWord } from "../services";
import { figures } from "./system";

export interface BulkOutcome {
  verb: "start" | "stop";
  /** Services asked. */
  asked: number;
  /** Services whose call failed, and why. */
  failures: { name: string; message: string }[];
}

export interface CentreActions {
  startAll(): Promise<BulkOutcome>;
  stopAll(): Promise<BulkOutcome>;
}

/** How long a bulk action's outcome stays: long enough to read, then out of the way. */
const OUTCOME_MS = 10_000;

export class CentreCard {
  readonly element: HTMLElement;
  private readonly figures = h("div", { class: "figures", "data-figures": "" });
  private readonly outcome = h("div", { class: "outcome", "aria-live": "polite" });
  private outcomeTimer: number | undefined;
  private snapshot: SystemSnapshot | undefined;
  private snapshotTime: Timestamp | undefined;
  private systemState: StateWord = "stopped";

  constructor(actions: CentreActions) {
    const startAll = h("button", { type: "button", "data-action": "start-all" }, "Start all");
    const stopAll = h("button", { type: "button", "data-action": "stop-all" }, "Stop all");
    startAll.addEventListener("click", () => void this.run(actions.startAll()));
    stopAll.addEventListener("click", () => void this.run(actions.stopAll()));
    this.element = h(
      "section",
      { class: "card centre", "data-card": "centre", "aria-labelledby": "centre-title" },
      h("header", { class: "card-header" }, h("h2", { id: "centre-title" }, "All services")),
      h("div", { class: "actions" }, startAll, stopAll),
      this.outcome,
      this.figures,
    );
    this.render();
  }

  private async run(pending: Promise<BulkOutcome>): Promise<void> {
    this.element.setAttribute("aria-busy", "true");
    try {
      this.showOutcome(await pending);
    } catch (error) {
      this.showText(`Could not list the services: ${errorText(error)}`);
    } finally {
      this.element.removeAttribute("aria-busy");
    }
  }

  private showOutcome({ verb, asked, failures }: BulkOutcome): void {
    const done = asked - failures.length;
    const past = verb === "start" ? "Started" : "Stopped";
    fill(
      this.outcome,
      h("p", {}, `${past} ${done} of ${asked}.`),
      failures.length > 0 &&
        h(
          "ul",
          { class: "failures" },
          ...failures.map((failure) =>
            h("li", {}, h("strong", {}, failure.name), ": ", failure.message),
          ),
        ),
    );
    this.clearOutcomeLater();
  }

  private showText(text: string): void {
    fill(this.outcome, h("p", { class: "rpc-error" }, text));
    this.clearOutcomeLater();
  }

  private clearOutcomeLater(): void {
    window.clearTimeout(this.outcomeTimer);
    this.outcomeTimer = window.setTimeout(() => fill(this.outcome), OUTCOME_MS);
  }

  /** A snapshot from the stream; a replayed one may be from before `system` stopped. */
  showSnapshot(snapshot: SystemSnapshot, at: Timestamp | undefined): void {
    this.snapshot = snapshot;
    this.snapshotTime = at;
    this.render();
  }

  /** Whether the figures are live depends on whether `system` still runs. */
  setSystemState(word: StateWord): void {
    if (word === this.systemState) return;
    this.systemState = word;
    this.render();
  }

  private render(): void {
    if (!this.snapshot) {
      fill(
        this.figures,
        h("p", { class: "muted" }, "No figures yet: start system for live figures."),
      );
      return;
    }
    const f = figures(this.snapshot);
    const row = (label: string, value: string | number) => [
      h("dt", {}, label),
      h("dd", {}, String(value)),
    ];
    const live = this.systemState === "running" || this.systemState === "failing";
    fill(
      this.figures,
      h(
        "dl",
        { class: "pairs figures-list" },
        ...row("Services", `${f.running} running of ${f.services}`),
        ...row("Failing", `${f.failing} failing, ${f.backingOff} backing off, ${f.failed} failed`),
        ...row("Subscribers", f.subscribers),
        ...row("RSS", f.rss),
        ...row("CPU", f.cpu),
        ...row("Uptime", f.uptime),
        ...row("Topics", f.topics),
        ...row("Runtime", `${f.threads} threads, ${f.tasks} tasks`),
      ),
      h(
        "p",
        { class: "muted small" },
        live
          ? `Live from system, ${time(this.snapshotTime)}.`
          : `As of ${time(this.snapshotTime)}: start system for live figures.`,
      ),
    );
  }
}
