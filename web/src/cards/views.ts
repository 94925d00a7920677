// Which view draws which payload. A card picks its view from the events that reach it,
// not from its name, so a second `images` service or a configured `http` service gets
// the right one without the page knowing the daemon's configuration.
import { ActivityView } from "./activities";
import { AirQualityView } from "./aq";
import { DataView } from "./data";
import { EmojiView } from "./emojis";
import { ImageView } from "./images";
import { KrakenView } from "./kraken";
import { LeaderboardView } from "./leaderboard";
import { ReaderView } from "./reader";
import { SlugsView } from "./slugs";
import { StreamerView } from "./streamer";
import { SystemView } from "./system";
import type { DataCase, View } from "./view";

/** Payloads drawn by the same view share a family. */
const FAMILIES: Record<DataCase, string> = {
  points: "streamer",
  text: "reader",
  line: "reader",
  image: "images",
  system: "system",
  slugs: "slugs",
  emoji: "emojis",
  activity: "activities",
  airQuality: "aq",
  ticker: "kraken",
  spread: "kraken",
  book: "kraken",
  leaderboard: "leaderboard",
  data: "data",
};

export function familyOf(payload: DataCase): string {
  return FAMILIES[payload];
}

export function createView(family: string, topic: string): View {
  switch (family) {
    case "streamer":
      return new StreamerView();
    case "reader":
      return new ReaderView();
    case "images":
      return new ImageView(topic);
    case "system":
      return new SystemView();
    case "slugs":
      return new SlugsView();
    case "emojis":
      return new EmojiView();
    case "activities":
      return new ActivityView();
    case "aq":
      return new AirQualityView();
    case "kraken":
      return new KrakenView();
    case "leaderboard":
      return new LeaderboardView();
    default:
      return new DataView();
  }
}
