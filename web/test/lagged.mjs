// The dashboard falling behind a flood, in Chromium. Usage:
//   node test/lagged.mjs URL
// Once the page streams, its main thread is kept busy for a few seconds and this
// script prints `flood`; the caller floods a topic and answers with a line. The page
// must then show how many events it skipped, and on which topic, rather than swallow
// the Lagged event. Prints `ok: ...` per check; exits 1 on the first failure.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import { ok, steps } from "./steps.mjs";

const [url] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
await steps(async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(url);
  await page.waitForSelector('[data-connection="live"]');
  ok("the page streams");

  // A page too busy to read its stream, as a slow tab would be.
  await page.evaluate(() => {
    setTimeout(() => {
      const until = Date.now() + 5_000;
      while (Date.now() < until);
    }, 0);
  });
  console.log("flood");
  await lines.next();
  const notice = page.locator("[data-lagged]");
  await notice.waitFor({ state: "visible" });
  ok(`the page says so: ${(await notice.textContent()).trim()}`);
}, async () => {
  await browser.close();
  process.stdin.destroy();
});
