// Drives Debian's headless Chromium (playwright-core, no browser download) on the ldash play page:
// opens the page, lets the player settle for WARMUP seconds, then samples window.ldash.stats every
// second for SECONDS, collects the glass-to-glass readings the page decoded from the frames'
// barcode in that window, the seconds of frozen picture (the capture time shown not changing for
// more than 3 frame intervals) and the seeks in that window, notes every manifest or playlist
// response with an error status, writes a screenshot, and prints one JSON object on stdout for the
// Rust test or the benchmark to check.
//
//   node tests/browser/play.cjs PLAYER_DIR URL WARMUP SECONDS SCREENSHOT [CHROMIUM_FLAG...]
//
// Chromium gets exactly the flags given: the caller's (the test kit's testkit/src/browser.rs, which
// holds the flags every headless run here uses).
// PLAYER_DIR is where playwright-core is installed (the driver's own dependency). `outside` lists
// every request the page made to a host other than the loopback (or the test kit's shaped path,
// 198.18.0.0/15, which reaches ldash on this machine); `libraries` the status and URL of every
// player library it loaded.
"use strict";

const path = require("path");

function percentile(sorted, p) {
  if (!sorted.length) {
    return null;
  }
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function main() {
  const [playerDir, url, warmup, seconds, screenshot, ...flags] = process.argv.slice(2);
  const { chromium } = require(path.resolve(playerDir, "node_modules", "playwright-core"));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: flags,
  });
  const samples = [];
  const console_ = [];
  const failed = []; // manifest and playlist responses with a 4xx/5xx status
  const outside = []; // requests to anything but the loopback
  const libraries = []; // "status url" of each player library loaded
  let glass = null;
  let picture = { frozen_s: null, seeks: 0 }; // over the measured window
  let measuredFrom = null; // the wall clock (ms since the epoch) when the measurement started
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 720 } });
    const page = await context.newPage();
    page.on("console", (m) => console_.push(m.type() + ": " + m.text()));
    page.on("pageerror", (e) => console_.push("pageerror: " + e.message));
    const loopback = /^(https?|wss?):\/\/(127\.0\.0\.1|localhost|\[::1\]|198\.1[89]\.\d{1,3}\.\d{1,3})(:\d+)?\//;
    page.on("request", (r) => {
      if (!loopback.test(r.url()) && !/^(data|blob):/.test(r.url())) {
        outside.push(r.url());
      }
    });
    page.on("response", (r) => {
      if (r.status() >= 400) {
        // Every error response goes into the console tail a failed case prints.
        console_.push("response: " + r.status() + " " + r.url());
      }
      if (/\.(mpd|m3u8)(\?|$)/.test(r.url()) && r.status() >= 400) {
        failed.push(r.status() + " " + r.url());
      }
      if (/(dash\.all\.min|hls\.min|shaka-player\.compiled)\.js(\?|$)/.test(r.url())) {
        libraries.push(r.status() + " " + r.url());
      }
    });
    await page.goto(url, { waitUntil: "domcontentloaded", timeout: 60000 });
    await page.waitForTimeout(1000 * Number(warmup));
    const from = await page.evaluate(() => performance.now());
    measuredFrom = Date.now();
    const before = await page.evaluate(() => (window.ldash ? window.ldash.stats.stalls : 0));
    for (let i = 0; i < Number(seconds); i++) {
      await page.waitForTimeout(1000);
      const stats = await page.evaluate((from) => {
        if (!window.ldash) {
          return null;
        }
        const s = JSON.parse(JSON.stringify(window.ldash.stats));
        // Since the measurement started.
        s.frozen = window.ldash.glass.reads ? window.ldash.frozen(from, performance.now()) : null;
        s.seeks = window.ldash.seeksSince(from);
        return s;
      }, from);
      if (stats) {
        delete stats.history;
        stats.at = i + 1;
        stats.stalls -= before;
        samples.push(stats);
      }
    }
    picture = await page.evaluate((from) => {
      if (!window.ldash) {
        return { frozen_s: null, seeks: 0 };
      }
      const to = performance.now();
      return {
        frozen_s: window.ldash.glass.reads ? window.ldash.frozen(from, to) : null,
        seeks: window.ldash.seeksSince(from),
      };
    }, from);
    glass = await page.evaluate((from) => {
      const g = window.ldash ? window.ldash.glass : { values: [], reads: 0, misses: 0 };
      return { values: g.values.filter(([t]) => t >= from).map(([, s]) => s), reads: g.reads, misses: g.misses };
    }, from);
    await page.screenshot({ path: screenshot });
  } finally {
    await browser.close();
  }
  const sorted = glass ? glass.values.slice().sort((a, b) => a - b) : [];
  const latencies = samples.map((s) => s.latency).filter((l) => l !== null).sort((a, b) => a - b);
  const buffers = samples.map((s) => s.buffer).filter((b) => b !== null).sort((a, b) => a - b);
  const summary = {
    glass_p50: percentile(sorted, 0.5),
    glass_p95: percentile(sorted, 0.95),
    glass_reads: sorted.length,
    glass_misses: glass ? glass.misses : 0,
    player_p50: percentile(latencies, 0.5),
    buffer_p50: percentile(buffers, 0.5),
    frozen_s: picture.frozen_s,
    seeks: picture.seeks,
  };
  process.stdout.write(JSON.stringify({ samples, summary, measured_from: measuredFrom, failed, outside, libraries, console: console_.slice(-30) }) + "\n");
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }) + "\n");
  process.exit(1);
});
