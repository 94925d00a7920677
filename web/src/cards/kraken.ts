import { fill, h } from "../dom";
import type { Book, BookLevel, Spread, Ticker } from "../gen/streamhandler/v1/payloads_pb.js";
import type { DataEvent, View } from "./view";

/** What the feed said last about one pair, and the part of the card that shows it. */
interface Pair {
  ticker?: Ticker;
  spread?: Spread;
  book?: Book;
  /** The book as last drawn, to flash the levels that changed since. */
  drawn?: Book;
  /** Parts whose data changed since they were drawn. Each part is redrawn on its own,
   * so that a ticker update does not cut short the flash of the book's new levels. */
  dirty: Set<"ticker" | "spread" | "book">;
  element: HTMLElement;
  tickerPart: HTMLElement;
  spreadPart: HTMLElement;
  bookPart: HTMLElement;
}

/** Levels shown per side: Kraken's checksum covers ten. */
const DEPTH = 10;

/** ask − bid, to as many decimals as the prices carry, without float noise. */
function difference(ask: string, bid: string): string {
  const decimals = Math.max(...[ask, bid].map((price) => price.split(".")[1]?.length ?? 0));
  const value = Number(ask) - Number(bid);
  return Number.isFinite(value) ? value.toFixed(decimals) : "?";
}

/** Volume by price, for one side of a book. */
function byPrice(levels: BookLevel[] | undefined): Map<string, string> {
  return new Map((levels ?? []).map((level) => [level.price, level.volume]));
}

/**
 * A column of decimal strings with the trailing zeros that every value shares dropped
 * ("90412.10000" → "90412.1" when no price needs more), so that four columns fit a
 * card; exact, since it only cuts zeros, and aligned, since all keep as many decimals.
 */
function shortColumn(values: string[]): string[] {
  const fractions = values.map((value) => value.split(".")[1] ?? "");
  const needed = Math.max(0, ...fractions.map((fraction) => fraction.replace(/0+$/, "").length));
  return values.map((value, i) => {
    const whole = value.split(".")[0];
    return needed === 0 ? whole! : `${whole}.${fractions[i]!.padEnd(needed, "0").slice(0, needed)}`;
  });
}

/** Cells for one side's levels, marked when a level is new or its volume moved. */
function sideCells(levels: BookLevel[], before: Map<string, string>, priceFirst: boolean) {
  const prices = shortColumn(levels.map((level) => level.price));
  const volumes = shortColumn(levels.map((level) => level.volume));
  return levels.map((level, i) => {
    const cls = before.get(level.price) !== level.volume ? "changed" : undefined;
    const price = h("td", { class: cls }, prices[i]);
    const volume = h("td", { class: cls }, volumes[i]);
    return priceFirst ? [price, volume] : [volume, price];
  });
}

export class KrakenView implements View {
  readonly element = h("div", { class: "kraken" });
  private readonly pairs = new Map<string, Pair>();

  private pair(name: string): Pair {
    let pair = this.pairs.get(name);
    if (!pair) {
      const tickerPart = h("div", { class: "ticker" });
      const spreadPart = h("p", { class: "spread" });
      const bookPart = h("div", { class: "book" });
      pair = {
        dirty: new Set(),
        element: h("div", { class: "pair" }, h("h3", {}, name), tickerPart, spreadPart, bookPart),
        tickerPart,
        spreadPart,
        bookPart,
      };
      this.pairs.set(name, pair);
      this.element.append(pair.element);
    }
    return pair;
  }

  update(event: DataEvent): void {
    const payload = event.payload;
    if (payload.case === "ticker") {
      const pair = this.pair(payload.value.pair);
      pair.ticker = payload.value;
      pair.dirty.add("ticker");
    } else if (payload.case === "spread") {
      const pair = this.pair(payload.value.pair);
      pair.spread = payload.value;
      pair.dirty.add("spread");
    } else if (payload.case === "book") {
      const pair = this.pair(payload.value.pair);
      pair.book = payload.value;
      pair.dirty.add("book");
    }
  }

  render(): void {
    for (const pair of this.pairs.values()) {
      const { ticker, spread, book } = pair;
      if (pair.dirty.has("ticker") && ticker) {
        fill(
          pair.tickerPart,
          h(
            "p",
            {},
            h("span", {}, "last ", h("b", {}, ticker.last)),
            h("span", {}, "bid ", h("b", {}, ticker.bid)),
            h("span", {}, "ask ", h("b", {}, ticker.ask)),
          ),
          h(
            "p",
            { class: "muted" },
            h("span", {}, `24h low ${ticker.low24h}`),
            h("span", {}, `high ${ticker.high24h}`),
            h("span", {}, `vol ${ticker.volume24h}`),
          ),
        );
      }
      if (pair.dirty.has("spread") && spread) {
        fill(
          pair.spreadPart,
          `spread ${difference(spread.ask, spread.bid)} · bid ${spread.bid} (${spread.bidVolume})` +
            ` · ask ${spread.ask} (${spread.askVolume})`,
        );
      }
      if (pair.dirty.has("book") && book) {
        fill(pair.bookPart, this.depthTable(book, pair.drawn));
        pair.drawn = book;
      }
      pair.dirty.clear();
    }
  }

  private depthTable(book: Book, before: Book | undefined): HTMLTableElement {
    // Nothing flashes on the first book: every level would.
    const bidsBefore = before ? byPrice(before.bids) : byPrice(book.bids);
    const asksBefore = before ? byPrice(before.asks) : byPrice(book.asks);
    const bids = sideCells(book.bids.slice(0, DEPTH), bidsBefore, false);
    const asks = sideCells(book.asks.slice(0, DEPTH), asksBefore, true);
    const empty = () => [h("td", {}), h("td", {})];
    const body = h("tbody", {});
    for (let i = 0; i < Math.max(bids.length, asks.length); i += 1) {
      body.append(h("tr", {}, ...(bids[i] ?? empty()), ...(asks[i] ?? empty())));
    }
    return h(
      "table",
      { class: "depth" },
      h("caption", { class: "visually-hidden" }, "Order book: bids and asks, best first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "bid vol"),
          h("th", { scope: "col" }, "bid"),
          h("th", { scope: "col" }, "ask"),
          h("th", { scope: "col" }, "ask vol"),
        ),
      ),
      body,
    );
  }
}
