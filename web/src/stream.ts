// The page's one Subscribe stream: every topic, the latest event of each first, then
// live events. When it ends or fails (the daemon restarted, say) it is opened again,
// waiting 0.5 s and doubling up to 5 s while attempts fail; a stream that got as far
// as its Subscribed event resets the wait.
import { errorText, isUnauthenticated, type Api } from "./client";
import type { Event, Subscribed } from "./gen/streamhandler/v1/streamhandler_pb.js";
import type { ConnectionBanner } from "./status";
import { askForToken } from "./token";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 5_000;

export interface StreamHandlers {
  /** The stream is registered: `subscribed` lists the topics it starts from. */
  onSubscribed(subscribed: Subscribed): void;
  onEvent(event: Event): void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => window.setTimeout(resolve, ms));

export async function followEvents(
  api: Api,
  banner: ConnectionBanner,
  handlers: StreamHandlers,
): Promise<never> {
  let delay = FIRST_DELAY_MS;
  banner.connecting();
  for (;;) {
    let reason: string;
    try {
      for await (const event of api.subscribe({ topics: [], last: true })) {
        if (event.payload.case === "subscribed") {
          delay = FIRST_DELAY_MS;
          banner.live();
          handlers.onSubscribed(event.payload.value);
        } else {
          try {
            handlers.onEvent(event);
          } catch (error) {
            // One event the page cannot draw is no reason to drop the stream.
            console.error(`event on ${event.topic} #${event.seq}:`, error);
          }
        }
      }
      reason = "the daemon closed it";
    } catch (error) {
      if (isUnauthenticated(error)) {
        banner.waitingForToken();
        await askForToken(errorText(error));
        continue;
      }
      reason = errorText(error);
    }
    banner.reconnecting(reason, delay);
    await sleep(delay);
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  }
}
