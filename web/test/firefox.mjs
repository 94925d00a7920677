// The dashboard in Firefox (the Debian build, driven over WebDriver BiDi by
// puppeteer-core; Playwright drives only its own Firefox builds). Usage:
//   node test/firefox.mjs URL
// Checks that the page streams, that a card's Start button starts its service and its
// content draws, and that Stop stops it. Prints `ok: ...` per check; exits 1 on the
// first failure.
import puppeteer from "puppeteer-core";
import { ok, steps } from "./steps.mjs";

const [url] = process.argv.slice(2);
const timeout = 20_000;

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
  headless: true,
});
await steps(async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  const waitFor = (fn, ...args) => page.waitForFunction(fn, { timeout }, ...args);

  await page.goto(url);
  await page.waitForSelector('[data-connection="live"]', { timeout });
  ok(`Firefox ${await browser.version()}: the page streams`);

  for (const card of ["streamer", "images", "leaderboard"]) {
    await page.click(`[data-card="${card}"] [data-action="start"]`);
  }
  await waitFor(() => document.querySelectorAll('[data-card="streamer"] svg circle').length > 0);
  await waitFor(() => document.querySelectorAll('[data-card="leaderboard"] tbody tr').length === 9);
  await waitFor(() => {
    const image = document.querySelector('[data-card="images"] img');
    return image?.complete && image.naturalWidth > 0;
  });
  ok("started from their cards: the plot has points, the leaderboard nine rows, the image loaded");

  await page.click('[data-action="stop-all"]');
  await waitFor(() =>
    ["streamer", "images", "leaderboard"].every(
      (card) =>
        document.querySelector(`[data-card="${card}"] [data-state]`)?.dataset.state === "stopped",
    ),
  );
  ok("stop all: the dots are off");
  if (errors.length > 0) throw new Error(`errors on the page: ${errors.join("; ")}`);
}, async () => {
  await browser.close();
});
