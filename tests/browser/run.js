// Opens a page in headless Chromium (Debian's `chromium`, or $CHROMIUM), or with BROWSER=firefox
// in headless Firefox (Debian's `firefox-esr`, or $FIREFOX), with puppeteer-core and lets a test
// drive it:
//
//   node run.js <page url>
//
// Prints one JSON line per thing that happens: `loaded`, every console line of the page that is
// a JSON report ({"event": …}), `pageerror`, and the answer to each command. Commands on stdin,
// one per line: `eval <JavaScript expression>` (awaited; prints {"event":"eval",ok,value|error}),
// `shot <file>` (a PNG screenshot of the whole page; prints {"event":"shot",ok}) and `quit`.
// The window is a laptop's, 1366 × 768. Console errors of the page are reported as
// `console_error` (Content-Security-Policy violations among them).
"use strict";
const puppeteer = require("puppeteer-core");
const readline = require("node:readline");

const [pageUrl] = process.argv.slice(2);
const say = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

(async () => {
  const firefox = process.env.BROWSER === "firefox";
  const browser = await puppeteer.launch(
    firefox
      ? // Debian's firefox-esr, over WebDriver BiDi.
        {
          browser: "firefox",
          executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
          headless: true,
          // A cold start on a busy 2-core machine (profile and font cache built) can be slow.
          timeout: 110000,
          // As root (CI) Firefox's content processes cannot start sandboxed.
          env: { ...process.env, MOZ_DISABLE_CONTENT_SANDBOX: "1" },
        }
      : {
          executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
          headless: true,
          timeout: 110000,
          // As root (CI) Chromium refuses to start without --no-sandbox.
          args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
        },
  );
  const page = await browser.newPage();
  await page.setViewport({ width: 1366, height: 768 });
  page.on("console", (message) => {
    if (message.type() === "error") say("console_error", { text: message.text() });
    try {
      const { event, ...fields } = JSON.parse(message.text());
      if (typeof event === "string") say(event, { ...fields, page: true });
    } catch {
      // Not one of the page's reports.
    }
  });
  page.on("pageerror", (error) => say("pageerror", { error: String(error) }));
  await page.goto(pageUrl, { waitUntil: "load", timeout: 110000 });
  say("loaded");
  readline.createInterface({ input: process.stdin }).on("line", async (line) => {
    if (line === "quit") {
      await Promise.race([browser.close(), new Promise((done) => setTimeout(done, 3000))]);
      process.exit(0);
    }
    if (line.startsWith("shot ")) {
      try {
        await page.screenshot({ path: line.slice(5), fullPage: true });
        say("shot", { ok: true });
      } catch (error) {
        say("shot", { ok: false, error: String(error.message || error) });
      }
      return;
    }
    if (!line.startsWith("eval ")) return;
    try {
      const value = await page.evaluate(line.slice(5));
      say("eval", { ok: true, value: value === undefined ? null : value });
    } catch (error) {
      say("eval", { ok: false, error: String(error.message || error) });
    }
  });
})().catch((error) => {
  say("failed", { error: String(error.message || error) });
  process.exit(1);
});
