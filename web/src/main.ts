// The dashboard: cards for streamd's services, live over one Subscribe stream, with
// Start and Stop calls going to the daemon that served the page.
import { Board } from "./board";
import type { Card } from "./cards/card";
import { CentreCard, type BulkOutcome } from "./cards/centre";
import { isDataEvent } from "./cards/view";
import { authorized, createApi, errorText } from "./client";
import type { Event, ServiceInfo, Subscribed } from "./gen/streamhandler/v1/streamhandler_pb.js";
import { ServiceDirectory, stateWord } from "./services";
import { ConnectionBanner, LagNotice } from "./status";
import { followEvents } from "./stream";
import { mountTokenForm } from "./token";

function required<T extends HTMLElement>(selector: string): T {
  const element = document.querySelector<T>(selector);
  if (!element) throw new Error(`index.html lacks ${selector}`);
  return element;
}

const api = createApi();
mountTokenForm(required("[data-token-slot]"));
const banner = new ConnectionBanner(required("[data-connection]"));
const lagNotice = new LagNotice(required("[data-notices]"));
const centre = new CentreCard({
  startAll: () => everyService("start"),
  stopAll: () => everyService("stop"),
});
const board = new Board(required("[data-grid]"), required("[data-more]"), centre, {
  start: (card) => void callService(card, "start"),
  stop: (card) => void callService(card, "stop"),
});
const directory = new ServiceDirectory(api, applyServices, (message) =>
  console.warn(`ListServices: ${message}`),
);

/**
 * Each topic's latest sequence number when the stream started: events up to it are the
 * replayed latest ones (`last`), which may predate the services' present state.
 */
let replayedUpTo = new Map<string, bigint>();

function applyServices(services: ServiceInfo[]): void {
  board.applyServices(services);
  const system = services.find((service) => service.name === "system");
  if (system) centre.setSystemState(stateWord(system));
}

function call(verb: "start" | "stop", name: string): Promise<ServiceInfo | undefined> {
  return authorized(async () =>
    verb === "start"
      ? (await api.startService({ name })).service
      : (await api.stopService({ name })).service,
  );
}

/** A card's own Start or Stop button. */
async function callService(card: Card, verb: "start" | "stop"): Promise<void> {
  card.setBusy(true);
  card.showRpcError(null);
  try {
    const service = await call(verb, card.name);
    if (service) applyServices([service]);
  } catch (error) {
    card.showRpcError(`Could not ${verb}: ${errorText(error)}`);
  } finally {
    card.setBusy(false);
    void directory.refresh();
  }
}

/** Starts or stops every service the daemon lists, all calls at once. */
async function everyService(verb: "start" | "stop"): Promise<BulkOutcome> {
  const services = await authorized(() => api.listServices({})).then((reply) => reply.services);
  applyServices(services);
  const results = await Promise.allSettled(services.map(({ name }) => call(verb, name)));
  const failures: BulkOutcome["failures"] = [];
  results.forEach((result, index) => {
    const name = services[index]!.name;
    const card = board.get(name);
    if (result.status === "fulfilled") {
      card?.showRpcError(null);
    } else {
      const message = errorText(result.reason);
      failures.push({ name, message });
      card?.showRpcError(`Could not ${verb}: ${message}`);
    }
  });
  void directory.refresh();
  return { verb, asked: services.length, failures };
}

function onSubscribed(subscribed: Subscribed): void {
  replayedUpTo = new Map(subscribed.positions.map((position) => [position.topic, position.seq]));
  // The daemon may have restarted, with other services running: ask again.
  void directory.refresh();
}

function onEvent(event: Event): void {
  const payload = event.payload;
  if (payload.case === "lagged") {
    lagNotice.add(payload.value);
    return;
  }
  if (event.topic === "") return;
  if (payload.case === "lifecycle") {
    const card = board.serviceCard(event.topic);
    card.lifecycle(payload.value);
    if (event.topic === "system") centre.setSystemState(card.state);
    directory.changed();
    return;
  }
  if (!isDataEvent(event)) return;
  const replayed = event.seq <= (replayedUpTo.get(event.topic) ?? 0n);
  if (payload.case === "system") {
    centre.showSnapshot(payload.value, event.time);
    // Only a live snapshot speaks for the services now.
    if (!replayed) applyServices(payload.value.services);
  }
  const isService = directory.names().includes(event.topic);
  const card = isService ? board.serviceCard(event.topic) : board.topicCard(event.topic);
  card.showEvent(event);
}

void directory.refresh();
void followEvents(api, banner, { onSubscribed, onEvent });
