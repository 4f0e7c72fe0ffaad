// Drives Debian's headless Chromium (playwright-core, no browser download) on the ldash play page:
// opens the page, samples window.ldash.stats every second, writes a screenshot, and prints one JSON
// object on stdout for the Rust test to check.
//
//   node tests/browser/play.cjs PLAYER_DIR URL SECONDS SCREENSHOT [CHROMIUM_FLAG...]
"use strict";

const path = require("path");

async function main() {
  const [playerDir, url, seconds, screenshot, ...flags] = process.argv.slice(2);
  const { chromium } = require(path.resolve(playerDir, "node_modules", "playwright-core"));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      ...flags,
    ],
  });
  const samples = [];
  const console_ = [];
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 720 } });
    const page = await context.newPage();
    page.on("console", (m) => console_.push(m.type() + ": " + m.text()));
    page.on("pageerror", (e) => console_.push("pageerror: " + e.message));
    await page.goto(url, { waitUntil: "domcontentloaded", timeout: 60000 });
    for (let i = 0; i < Number(seconds); i++) {
      await page.waitForTimeout(1000);
      const stats = await page.evaluate(() => (window.ldash ? JSON.parse(JSON.stringify(window.ldash.stats)) : null));
      if (stats) {
        delete stats.history;
        stats.at = i + 1;
        samples.push(stats);
      }
    }
    await page.screenshot({ path: screenshot });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify({ samples, console: console_.slice(-30) }) + "\n");
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }) + "\n");
  process.exit(1);
});
