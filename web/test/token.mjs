// The dashboard of a daemon that needs a token, in Chromium over HTTPS. Usage:
//   node test/token.mjs URL TOKEN
// The page must ask for the token, say so when a wrong one is given, go live with the
// right one, and keep it for the tab: a reload does not ask again; images, which need
// the token too, load. Prints `ok: ...` per check; exits 1 on the first failure.
import { chromium } from "playwright-core";
import { ok, steps } from "./steps.mjs";

const [url, token] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
await steps(async () => {
  // The test's certificate authority is its own, not one the browser knows.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);

  await page.goto(url);
  await page.waitForSelector("form[data-token]");
  ok("the page asks for the token");

  await page.fill("form[data-token] input", "not-the-token");
  await page.click("form[data-token] button");
  await page.waitForSelector("form[data-token] >> text=The token was refused");
  ok("a wrong token is refused, and the page says so");

  await page.fill("form[data-token] input", token);
  await page.click("form[data-token] button");
  await page.waitForSelector('[data-connection="live"]');
  ok("with the right token the page streams");

  await page.reload();
  await page.waitForSelector('[data-connection="live"]');
  if (await page.$("form[data-token]")) throw new Error("the token was asked for again");
  ok("after a reload the tab still has the token");

  // Images need the token too: the page fetches them with it.
  await page.click('[data-card="images"] [data-action="start"]');
  await page.waitForFunction(() => {
    const image = document.querySelector('[data-card="images"] img');
    return image?.complete && image.naturalWidth > 0;
  });
  ok("an image, fetched with the token, loaded");
}, async () => {
  await browser.close();
});
