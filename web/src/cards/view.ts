// A card's content: it takes the events of its topic and draws them. `update` only
// records what an event says; `render`, called at most once per animation frame, draws
// it, so that a topic publishing hundreds of events a second costs one redraw a frame.
import type { Event } from "../gen/streamhandler/v1/streamhandler_pb.js";

export type DataCase = Exclude<
  Event["payload"]["case"],
  "lifecycle" | "lagged" | "subscribed" | undefined
>;
export type DataEvent = Event & { payload: Extract<Event["payload"], { case: DataCase }> };

export interface View {
  readonly element: HTMLElement;
  update(event: DataEvent): void;
  render(): void;
}

export function isDataEvent(event: Event): event is DataEvent {
  const kind = event.payload.case;
  return kind !== undefined && kind !== "lifecycle" && kind !== "lagged" && kind !== "subscribed";
}
