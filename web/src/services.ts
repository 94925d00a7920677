// What the page knows of the daemon's services: their state words, and a ListServices
// that runs at load, after every start and stop, and shortly after lifecycle events,
// so that the dots are right even when the `system` service is not running.
import { authorized, type Api } from "./client";
import { Health, ServiceState, type ServiceInfo } from "./gen/streamhandler/v1/streamhandler_pb.js";

export type StateWord = "running" | "backing-off" | "failing" | "failed" | "stopped";

export const STATE_LABELS: Record<StateWord, string> = {
  running: "running",
  "backing-off": "backing off",
  failing: "failing",
  failed: "failed",
  stopped: "stopped",
};

export function stateWord(info: Pick<ServiceInfo, "state" | "health">): StateWord {
  switch (info.state) {
    case ServiceState.RUNNING:
      return info.health === Health.FAILING ? "failing" : "running";
    case ServiceState.BACKING_OFF:
      return "backing-off";
    case ServiceState.FAILED:
      return "failed";
    default:
      return "stopped";
  }
}

/** Lifecycle events come in bursts (start all); one ListServices answers a burst. */
const DEBOUNCE_MS = 200;

export class ServiceDirectory {
  private timer: number | undefined;
  private changes = 0;
  private known: string[] = [];

  constructor(
    private readonly api: Api,
    private readonly onList: (services: ServiceInfo[]) => void,
    private readonly onError: (message: string) => void,
  ) {}

  /** Names from the latest ListServices, in name order. */
  names(): string[] {
    return this.known;
  }

  /** Something changed: list again once the burst is over. */
  changed(): void {
    this.changes += 1;
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.refresh(), DEBOUNCE_MS);
  }

  async refresh(): Promise<ServiceInfo[]> {
    const changesBefore = this.changes;
    try {
      const { services } = await authorized(() => this.api.listServices({}));
      this.known = services.map((service) => service.name);
      this.onList(services);
      // A lifecycle event that came while the call was out may be newer than this
      // answer: list once more so the last word is the daemon's latest.
      if (this.changes !== changesBefore) this.changed();
      return services;
    } catch (error) {
      this.onError(String(error instanceof Error ? error.message : error));
      return [];
    }
  }
}
