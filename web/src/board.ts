// The cards and where they go: the original 3×3 grid with the centre card in the
// middle, and below it every further service and published topic, in name order.
import { Card, type CardActions } from "./cards/card";
import type { CentreCard } from "./cards/centre";
import type { ServiceInfo } from "./gen/streamhandler/v1/streamhandler_pb.js";

const CENTRE = "centre";
const GRID = [
  "slugs",
  "emojis",
  "activities",
  "kraken",
  CENTRE,
  "leaderboard",
  "streamer",
  "reader",
  "images",
];
/** Built-in services below the grid, shown before the daemon has been asked. */
const BUILT_IN_EXTRAS = ["aq", "system"];

export class Board {
  private readonly cards = new Map<string, Card>();

  constructor(
    grid: HTMLElement,
    private readonly more: HTMLElement,
    centre: CentreCard,
    private readonly actions: CardActions,
  ) {
    for (const name of GRID) {
      if (name === CENTRE) {
        grid.append(centre.element);
        continue;
      }
      const card = new Card(name, actions);
      card.becomeService();
      this.cards.set(name, card);
      grid.append(card.element);
    }
    for (const name of BUILT_IN_EXTRAS) this.serviceCard(name);
  }

  get(name: string): Card | undefined {
    return this.cards.get(name);
  }

  /** The card of a service, made below the grid if it is new. */
  serviceCard(name: string): Card {
    const existing = this.cards.get(name);
    if (existing) {
      if (!existing.isService) {
        existing.becomeService();
        // Services come before published topics: move it among them.
        this.place(existing);
      }
      return existing;
    }
    const card = new Card(name, this.actions);
    card.becomeService();
    this.cards.set(name, card);
    this.place(card);
    return card;
  }

  /** The card of a topic: a service's if there is one, else one for a published topic. */
  topicCard(name: string): Card {
    const existing = this.cards.get(name);
    if (existing) return existing;
    const card = new Card(name, this.actions);
    card.becomeTopic();
    this.cards.set(name, card);
    this.place(card);
    return card;
  }

  applyServices(services: ServiceInfo[]): void {
    for (const info of services) this.serviceCard(info.name).setService(info);
  }

  /** Inserts a card below the grid: services by name, then topics by name. */
  private place(card: Card): void {
    const rank = (c: Card) => (c.isService ? 0 : 1);
    const after = [...this.more.children].find((element) => {
      const other = this.cards.get((element as HTMLElement).dataset.card ?? "");
      if (!other || other === card) return false;
      return rank(other) > rank(card) || (rank(other) === rank(card) && other.name > card.name);
    });
    this.more.insertBefore(card.element, after ?? null);
  }
}
