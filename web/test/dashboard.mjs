// The dashboard in Chromium against a real streamd, as a person would use it. Usage:
//   node test/dashboard.mjs URL SCREENSHOT.png CARD,CARD,...
// The cards named are those whose services can work here: they must fill. A client's
// topic `weather/denver` (`{"temp": 21.5}`) must have been published before.
// The daemon's restart is the caller's: this script prints `stop-daemon` and
// `start-daemon` on stdout and waits for a line on stdin after each. Every check
// prints `ok: ...`; the first failure exits 1.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import { ok, steps } from "./steps.mjs";

const [url, screenshot, cards] = process.argv.slice(2);
const patience = 20_000;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const ask = async (what) => {
  console.log(what);
  await lines.next();
};

const filled = cards.split(",");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
await steps(async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.setDefaultTimeout(patience);
  const state = (card) =>
    page.locator(`[data-card="${card}"] [data-state]`).first().getAttribute("data-state");
  const waitFor = (fn, arg) => page.waitForFunction(fn, arg, { timeout: patience });

  await page.goto(url);
  await page.waitForSelector('[data-connection="live"]');
  ok("the page streams");
  await waitFor(() =>
    document
      .querySelector('[data-card="weather/denver"] [data-content]')
      ?.textContent.includes("21.5"),
  );
  ok("a client's topic has a card of its own, filled from the latest event");

  await page.click('[data-card="streamer"] [data-action="start"]');
  await waitFor(() => document.querySelectorAll('[data-card="streamer"] svg circle').length > 0);
  ok("streamer started from its card plots points");

  await page.click('[data-action="start-all"]');
  for (const card of filled) {
    await waitFor(
      (card) =>
        document.querySelector(`[data-card="${card}"] [data-state]`)?.dataset.state === "running" &&
        document.querySelector(`[data-card="${card}"] [data-content]`)?.textContent.trim() !== "",
      card,
    );
  }
  ok(`start all: ${filled.join(", ")} running and filled`);
  await waitFor(() => document.querySelectorAll('[data-card="leaderboard"] tbody tr').length === 9);
  ok("the leaderboard shows nine ranked rows");
  await waitFor(() => {
    const image = document.querySelector('[data-card="images"] img');
    return image?.complete && image.naturalWidth > 0;
  });
  ok("the images card shows an image that loaded");
  // Every plot point drawn and the book flash over, for a still picture.
  await page.waitForTimeout(1_000);
  await page.screenshot({ path: screenshot, fullPage: true });
  ok(`screenshot in ${screenshot}`);

  await page.click('[data-action="stop-all"]');
  await waitFor(() => {
    const states = [...document.querySelectorAll("[data-card] [data-state]")].map(
      (dot) => dot.dataset.state,
    );
    return states.length >= 10 && states.every((s) => s === "stopped");
  });
  ok("stop all: every dot is off");

  await ask("stop-daemon");
  await waitFor(() =>
    document.querySelector("[data-connection]")?.textContent.toLowerCase().includes("reconnecting"),
  );
  ok("the page says it is reconnecting while the daemon is down");
  await ask("start-daemon");
  await page.waitForSelector('[data-connection="live"]');
  // From the keyboard: focus the button, press Enter.
  await page.focus('[data-card="reader"] [data-action="start"]');
  await page.keyboard.press("Enter");
  await waitFor(
    () => document.querySelector('[data-card="reader"] [data-state]')?.dataset.state === "running",
  );
  ok(`the page reconnected by itself and drives the new daemon (reader ${await state("reader")})`);

  // A phone's width: the grid becomes one column, nothing wider than the screen.
  await page.setViewportSize({ width: 375, height: 800 });
  await waitFor(() => document.documentElement.scrollWidth <= 375);
  ok("readable at a phone's width");

  if (errors.length > 0) throw new Error(`errors on the page: ${errors.join("; ")}`);
}, async () => {
  await browser.close();
  process.stdin.destroy();
});
