// One card of the dashboard: a service's state, its Start and Stop buttons, its errors
// and its latest content; or, for a topic some program publishes to, the content alone.
import { fill, h, visuallyHidden } from "../dom";
import {
  Lifecycle_Kind,
  type Lifecycle,
  type ServiceInfo,
} from "../gen/streamhandler/v1/streamhandler_pb.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { count, duration, plural, time } from "../format";
import { STATE_LABELS, stateWord, type StateWord } from "../services";
import type { DataEvent, View } from "./view";
import { createView, familyOf } from "./views";

export interface CardActions {
  start(card: Card): void;
  stop(card: Card): void;
}

interface Controls {
  state: HTMLElement;
  stateLabel: HTMLElement;
  description: HTMLElement;
  meta: HTMLElement;
  lastError: HTMLElement;
  rpcError: HTMLElement;
}

let cardCount = 0;

export class Card {
  readonly element: HTMLElement;
  private readonly header: HTMLElement;
  private readonly content: HTMLElement;
  private controls: Controls | null = null;
  private word: StateWord = "stopped";
  private info: ServiceInfo | undefined;
  private lastEventAt: Timestamp | undefined;
  private view: View | null = null;
  private family = "";
  private frame = 0;

  constructor(
    readonly name: string,
    private readonly actions: CardActions,
  ) {
    cardCount += 1;
    const titleId = `card-title-${cardCount}`;
    this.header = h("header", { class: "card-header" }, h("h2", { id: titleId }, name));
    this.content = h("div", { class: "content", "data-content": "" });
    this.element = h(
      "section",
      { class: "card", "data-card": name, "aria-labelledby": titleId },
      this.header,
      this.content,
    );
  }

  get isService(): boolean {
    return this.controls !== null;
  }

  /** Gives the card its state indicator, buttons and error lines: it is a service's. */
  becomeService(): void {
    if (this.controls) return;
    this.element.querySelector(".topic-tag")?.remove();
    const stateLabel = h("span", { class: "state-label" }, STATE_LABELS.stopped);
    const state = h(
      "span",
      { class: "state", "data-state": "stopped" },
      h("span", { class: "dot", "aria-hidden": "true" }),
      stateLabel,
    );
    const start = h(
      "button",
      { type: "button", "data-action": "start" },
      "Start",
      visuallyHidden(` ${this.name}`),
    );
    const stop = h(
      "button",
      { type: "button", "data-action": "stop" },
      "Stop",
      visuallyHidden(` ${this.name}`),
    );
    start.addEventListener("click", () => this.actions.start(this));
    stop.addEventListener("click", () => this.actions.stop(this));
    this.controls = {
      state,
      stateLabel,
      description: h("p", { class: "description", hidden: true }),
      meta: h("p", { class: "meta", hidden: true }),
      lastError: h("p", { class: "last-error", "data-last-error": "", hidden: true }),
      rpcError: h("p", { class: "rpc-error", "data-rpc-error": "", role: "alert", hidden: true }),
    };
    this.header.append(state);
    this.content.before(
      this.controls.description,
      h("div", { class: "actions" }, start, stop),
      this.controls.meta,
      this.controls.lastError,
      this.controls.rpcError,
    );
  }

  /** Marks a card that shows a topic no service owns. */
  becomeTopic(): void {
    if (this.controls || this.element.querySelector(".topic-tag")) return;
    this.header.append(h("span", { class: "topic-tag" }, "published topic"));
  }

  /** The service as the daemon reports it (ListServices, StartService, a snapshot). */
  setService(info: ServiceInfo): void {
    this.becomeService();
    this.info = info;
    const controls = this.controls!;
    this.setState(stateWord(info));
    const description =
      info.kind !== info.name ? `${info.kind}: ${info.description}` : info.description;
    controls.description.textContent = description;
    controls.description.hidden = description === "";
    this.noteEventTime(info.lastEventAt);
    this.renderMeta();
    this.setLastError(info.lastError);
  }

  /**
   * Error counters from the latest report (an error comes with a lifecycle event, which
   * brings a new report); the last event's time from the stream itself. No event count:
   * without `system` running, nothing would keep it current.
   */
  private renderMeta(): void {
    const info = this.info;
    if (!this.controls || !info) return;
    const meta = [
      info.errors === 0n ? "no errors" : plural(info.errors, "error"),
      info.restarts > 0n && plural(info.restarts, "restart"),
      info.consecutiveFailures > 0 && `${count(info.consecutiveFailures)} failed in a row`,
      this.lastEventAt && `last event ${time(this.lastEventAt)}`,
    ].filter(Boolean);
    this.controls.meta.textContent = meta.join(" · ");
    this.controls.meta.hidden = false;
  }

  /** A lifecycle event on the service's topic, ahead of the next ListServices. */
  lifecycle(event: Lifecycle): void {
    this.becomeService();
    switch (event.kind) {
      case Lifecycle_Kind.STARTED:
        this.setState("running");
        break;
      case Lifecycle_Kind.STOPPED:
        this.setState("stopped");
        break;
      case Lifecycle_Kind.ERROR:
        if (this.word === "running") this.setState("failing");
        this.setLastError(event.message);
        break;
      case Lifecycle_Kind.RESTARTING:
        this.setState("backing-off");
        this.setLastError(
          `${event.message} (restart ${event.attempt} in ${duration(event.backoff)})`,
        );
        break;
      case Lifecycle_Kind.FAILED:
        this.setState("failed");
        this.setLastError(event.message);
        break;
    }
  }

  private setState(word: StateWord): void {
    this.word = word;
    if (!this.controls) return;
    this.controls.state.dataset.state = word;
    this.controls.stateLabel.textContent = STATE_LABELS[word];
    // A last error reads as history once the service is healthy or stopped again.
    this.controls.lastError.classList.toggle("past", word === "running" || word === "stopped");
  }

  private setLastError(message: string): void {
    if (!this.controls) return;
    fill(this.controls.lastError, h("span", { class: "label" }, "Last error: "), message);
    this.controls.lastError.hidden = message === "";
  }

  /** The outcome of this page's own Start or Stop call; null clears it. */
  showRpcError(message: string | null): void {
    if (!this.controls) return;
    this.controls.rpcError.textContent = message ?? "";
    this.controls.rpcError.hidden = message === null;
  }

  setBusy(busy: boolean): void {
    if (busy) this.element.setAttribute("aria-busy", "true");
    else this.element.removeAttribute("aria-busy");
  }

  /** Keeps the later of the report's and the stream's last event times. */
  private noteEventTime(at: Timestamp | undefined): void {
    if (!at) return;
    const seen = this.lastEventAt;
    if (
      seen &&
      (seen.seconds > at.seconds || (seen.seconds === at.seconds && seen.nanos >= at.nanos))
    )
      return;
    this.lastEventAt = at;
    this.renderMeta();
  }

  showEvent(event: DataEvent): void {
    this.noteEventTime(event.time);
    const family = familyOf(event.payload.case);
    if (family !== this.family || !this.view) {
      this.family = family;
      this.view = createView(family, this.name);
      fill(this.content, this.view.element);
    }
    this.view.update(event);
    this.scheduleRender();
  }

  private scheduleRender(): void {
    if (this.frame !== 0) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.view?.render();
    });
  }

  /** The service's state from the latest report, for cards that depend on another. */
  get state(): StateWord {
    return this.word;
  }
}
