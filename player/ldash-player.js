// The ldash play page: plays an LL-DASH manifest with dash.js or Shaka Player, or an LL-HLS playlist
// with hls.js or Shaka Player (?engine=dashjs|hlsjs|shaka), and shows live statistics every second.
// When the stream carries its capture time as a barcode (ldash-clock), the page reads it from every
// frame it shows and reports the glass-to-glass latency, and how long the picture stood still.
// Everything a test or a person needs is in window.ldash.stats, window.ldash.glass and
// window.ldash.picture (with window.ldash.frozen(from, to) and window.ldash.seeksSince(from)).
"use strict";

(function () {
  const config = window.LDASH;
  const video = document.getElementById("video");
  // The first engine of a format is the page's default, chosen by measurement: Shaka for LL-HLS
  // (one streamed request per segment from the preload hint; 1.0 s glass-to-glass and no freeze at
  // 100 ms RTT and 2% loss, where hls.js, a blocking reload and a request per part, froze 4 to 21
  // s of 30 with any part size; BENCHMARKS.md, 6b), dash.js for LL-DASH.
  const engines = { dash: ["dashjs", "shaka"], hls: ["shaka", "hlsjs"] };
  const asked = new URLSearchParams(location.search).get("engine");
  const engine = engines[config.kind].includes(asked) ? asked : engines[config.kind][0];
  // ?rtt=SECONDS: the round trip to assume instead of the measured one; ?latency=SECONDS: the target
  // itself (dash.js's live delay, Shaka's live sync target, or for Shaka on LL-HLS the buffer the
  // page keeps ahead), instead of the page's choice.
  const query = new URLSearchParams(location.search);
  const positive = (name) => {
    const v = Number(query.get(name));
    return query.has(name) && Number.isFinite(v) && v >= 0 ? v : null;
  };
  const latencyOverride = positive("latency") || null;
  const rttOverride = positive("rtt");
  // ?jump=0: Shaka on LL-HLS catches up from its start by playing faster only, without the page's
  // one jump forward in the first seconds (for comparing the two).
  const startJump = query.get("jump") !== "0";
  const stats = {
    player: engine,
    latency: null, // seconds behind the live edge, as the player computes it
    glass: null, // glass-to-glass seconds (median of the last second), when the stream carries a clock
    buffer: null, // seconds buffered ahead
    rate: 1,
    rtt: null, // the round trip the page measured (seconds), from which it chose its aim
    aim: null, // what the page asked the player for: dash.js's live delay, or the buffer kept ahead
    width: null,
    height: null,
    bitrate: null, // bits per second of the current representation
    stalls: 0,
    seeks: 0, // seeking events since the page loaded (the page's live-edge jumps and the player's own)
    frozen: null, // seconds of frozen picture since the page loaded, when the stream carries a clock
    protocol: null, // nextHopProtocol of the latest segment request (h2, h3, http/1.1)
    currentTime: 0,
    playing: false,
    history: [], // [ms since page load, latency]
    error: null,
  };
  // Glass-to-glass samples: [performance.now() ms, seconds]; reads that failed the barcode check.
  const glass = { values: [], reads: 0, misses: 0 };
  // The picture on screen, by its capture time: when it was first shown (performance.now() ms), the
  // capture-time step between frames (the frame interval, a median of recent steps), the frozen
  // intervals [from, to] (the capture time shown did not change for more than 3 frame intervals;
  // the whole interval counts), and when each seek started. Before the first frame the picture
  // counts as frozen from the page's load.
  const picture = { stamp: null, since: performance.now(), step: 1000 / 30, steps: [], freezes: [], seeks: [] };
  // Seconds of frozen picture between `from` and `to` (performance.now() ms), the freeze going on
  // at `to` included.
  function frozen(from, to) {
    const ongoing = to - picture.since > 3 * picture.step ? [[picture.since, to]] : [];
    let total = 0;
    for (const [a, b] of picture.freezes.concat(ongoing)) {
      total += Math.max(0, Math.min(b, to) - Math.max(a, from));
    }
    return total / 1000;
  }
  const seeksSince = (from) => picture.seeks.filter((t) => t >= from).length;
  window.ldash = { stats, glass, picture, frozen, seeksSince, engine };

  const names = { dashjs: "dash.js", hlsjs: "hls.js", shaka: "Shaka" };
  const switcher = document.getElementById("engines");
  for (const [kind, page] of [["dash", config.dashPage], ["hls", config.hlsPage]]) {
    for (const e of engines[kind]) {
      const a = document.createElement("a");
      a.href = page + (e === engines[kind][0] ? "" : "?engine=" + e);
      a.textContent = (kind === "dash" ? "LL-DASH" : "LL-HLS") + " · " + names[e];
      if (kind === config.kind && e === engine) {
        a.classList.add("active");
      }
      switcher.appendChild(a);
    }
  }
  if (config.fromCdn) {
    document.getElementById("libraries").textContent =
      "This ldash was built without access to the npm registry, so the player libraries are not built in: loading the same pinned versions from a public CDN (rebuild with the registry reachable to embed them).";
  }

  function fail(message) {
    stats.error = String(message);
    document.getElementById("error").textContent = stats.error;
  }

  function load(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error("cannot load " + src));
      document.head.appendChild(script);
    });
  }

  let sampleLatency = () => null;
  let sampleLevel = () => {};

  // The round trip to ldash in seconds, the quickest of three requests for the manifest (small,
  // answered at once, not cached) on the connection the player then uses, and the manifest's text.
  // The page aims as close to the live edge as the path allows: every round trip is a request at a
  // segment boundary (dash.js, Shaka) or per part (hls.js), and a lost packet costs about one more.
  async function probePath() {
    let best = Infinity;
    let text = "";
    for (let i = 0; i < 3; i++) {
      const start = performance.now();
      try {
        text = await (await fetch(config.manifest, { cache: "no-store" })).text();
      } catch (e) {
        break;
      }
      best = Math.min(best, performance.now() - start);
    }
    const rtt = rttOverride !== null ? rttOverride : Number.isFinite(best) ? best / 1000 : 0;
    stats.rtt = rtt;
    return { rtt, text };
  }

  async function startDash() {
    const [, path] = await Promise.all([load(config.dashUrl), probePath()]);
    const player = dashjs.MediaPlayer().create();
    const settings = {
      streaming: {
        // Target latency comes from the MPD's ServiceDescription; catch-up keeps it there.
        liveCatchup: { enabled: true, mode: "liveCatchupModeDefault" },
        utcSynchronization: { enabled: true },
        abr: { autoSwitchBitrate: { video: true } },
      },
    };
    // The MPD's ServiceDescription is for every player, wherever it is; the page knows its round
    // trip and aims at the ServiceDescription's minimum plus two round trips, within its maximum
    // (0.1 s chunks: 0.3 s on a clean path instead of 0.6 s, no stall; BENCHMARKS.md 6b).
    const latency = /<Latency\b[^>]*>/.exec(path.text);
    const ms = (name) => {
      const m = latency && new RegExp("\\b" + name + '="([0-9.]+)"').exec(latency[0]);
      return m ? Number(m[1]) / 1000 : null;
    };
    const [min, max] = [ms("min"), ms("max")];
    const delay = latencyOverride || (min !== null ? Math.min(max || Infinity, min + 2 * path.rtt) : null);
    if (delay) {
      settings.streaming.delay = { liveDelay: delay };
      stats.aim = delay;
    }
    player.updateSettings(settings);
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => fail("dash.js: " + JSON.stringify(e.error || e)));
    player.initialize(video, config.manifest, true);
    sampleLatency = () => player.getCurrentLiveLatency();
    sampleLevel = () => {
      const rep = player.getCurrentRepresentationForType && player.getCurrentRepresentationForType("video");
      if (rep) {
        stats.bitrate = rep.bandwidth || rep.bitrateInKbit * 1000 || null;
      }
    };
    window.ldash.player = player;
  }

  async function startHls() {
    await load(config.hlsUrl);
    if (!Hls.isSupported()) {
      video.src = config.manifest; // Safari plays LL-HLS natively
      return;
    }
    // Low-latency mode targets the playlist's PART-HOLD-BACK, which ldash derives from the parts it
    // observed; a stall adds 0.25 s to the target (hls.js's default is a whole second).
    const hls = new Hls({
      lowLatencyMode: true,
      liveSyncOnStallIncrease: 0.25,
      // hls.js's own catch-up only runs with more than 1 s buffered ahead, which a sub-second
      // latency never has: it stayed wherever its start left it (0.85 to 1.1 s glass-to-glass).
      // It is off (1 = hls.js leaves the rate alone) and the page catches up itself, below.
      maxLiveSyncPlaybackRate: 1,
    });
    // hls.js otherwise stays where a slow start left it (3.5 to 4 s behind in the first
    // measurements): a maximum latency three target durations above PART-HOLD-BACK makes it jump
    // back to the live edge. Not less: a viewer 100 ms away with some loss settles near 2 s, and a
    // bound one target duration above PART-HOLD-BACK made hls.js jump there and starve again and
    // again (9 to 44 seeks and up to 29 s of frozen picture in 30 s, ldash-bench --net
    // rtt100-loss2-jitter10). It can only be set once the playlist is known (hls.js rejects it in
    // the constructor without a fixed liveSyncDuration).
    hls.on(Hls.Events.LEVEL_UPDATED, (_, data) => {
      const hold = data.details.partHoldBack || data.details.holdBack;
      if (hold) {
        hls.config.liveMaxLatencyDuration = hold + 3 * data.details.targetduration;
      }
    });
    // Catch-up: up to 1.15x while more than 0.1 s behind hls.js's target and more than 0.3 s is
    // buffered ahead (so that speeding up never empties the buffer), normal speed otherwise.
    setInterval(() => {
      const target = hls.targetLatency;
      const behind = Number.isFinite(target) ? hls.latency - target : 0;
      const rate = behind > 0.1 && bufferAhead() > 0.3 && !video.paused ? Math.min(1.15, 1 + behind / 2) : 1;
      if (Math.abs(video.playbackRate - rate) > 0.01) {
        video.playbackRate = rate;
      }
    }, 250);
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) {
        fail("hls.js: " + data.type + " " + data.details);
      } else {
        // Stalls and recovered errors, for whoever reads the console (the browser tests print it).
        console.warn("hls.js " + data.details + " at " + video.currentTime.toFixed(3) + " buffered " + bufferAhead().toFixed(3));
      }
    });
    hls.loadSource(config.manifest);
    hls.attachMedia(video);
    sampleLatency = () => hls.latency;
    sampleLevel = () => {
      const level = hls.levels && hls.levels[hls.currentLevel];
      if (level) {
        stats.bitrate = level.bitrate;
      }
    };
    window.ldash.player = hls;
  }

  async function startShaka() {
    await load(config.shakaUrl);
    shaka.polyfill.installAll();
    const player = new shaka.Player();
    await player.attach(video);
    // Low-latency mode follows PART-HOLD-BACK (LL-HLS) and the ServiceDescription (LL-DASH). Shaka's
    // bandwidth estimate over a segment that arrives at the encoder's pace (it streams LL-HLS
    // segments whole from the preload hint) is the stream's own bitrate: it switched down to the
    // 320x180 rendition after about 20 s and stalled 1.4 s doing it, so the page keeps the rendition
    // it starts with; the engine buttons compare latency, not adaptation.
    player.configure({ streaming: { lowLatencyMode: true }, abr: { enabled: false } });
    // Shaka reports every streaming error, then decides: for a live stream it retries a segment
    // that is missing or late (an encoder that went away for a moment) and marks the error
    // recoverable right after the event. Only what stays critical is a failure.
    player.addEventListener("error", (e) => {
      const error = e.detail;
      setTimeout(() => {
        if (!error || error.severity === shaka.util.Error.Severity.CRITICAL) {
          fail("Shaka: " + (error ? error.code + " " + error.message : e));
        } else {
          console.warn("Shaka recovered from " + error.code + " at " + video.currentTime.toFixed(3));
        }
      }, 0);
    });
    const path = config.kind === "hls" ? await probePath() : null;
    if (config.kind === "hls") {
      // Shaka catches up only towards a DASH ServiceDescription; an HLS stream has none, and without
      // a target Shaka stays wherever its start left it (0.4 s, or 1.7-1.9 s after a slow start).
      // Its own live sync, which measures from the end of its seek range, either drained the
      // buffer to nothing (7 stalls and up to 4 s of frozen picture in 30 s, with 0.2 s and 0.35
      // s targets) or held 0.5 s more than needed, run to run. The page keeps what is buffered
      // ahead instead: a part, 0.15 s for decoding and jitter, and two round trips.
      const part = (await partTarget()) || 0.1;
      const want = latencyOverride || part + 0.15 + 2 * path.rtt;
      stats.aim = want;
      holdBuffer(want, (rate) => (rate === 1 ? player.cancelTrickPlay() : player.trickPlay(rate, false)));
    } else if (latencyOverride) {
      player.configure({
        streaming: { liveSync: { enabled: true, targetLatency: latencyOverride, targetLatencyTolerance: 0.1, maxPlaybackRate: 1.25 } },
      });
    }
    await player.load(config.manifest);
    sampleLatency = () => player.getStats().liveLatency;
    sampleLevel = () => {
      const track = player.getVariantTracks().find((t) => t.active);
      if (track) {
        stats.bitrate = track.videoBandwidth || track.bandwidth || null;
      }
    };
    window.ldash.player = player;
  }

  // Keeps `want` seconds buffered ahead: faster (up to 1.15x, 1.25x while more than half a second
  // too much is buffered) while more is buffered, slower (down to 0.95x) while less, normal speed
  // within 50 ms. Glass-to-glass is the encoder's delay plus what the player holds ahead, so this is
  // the latency it aims at, whatever the player's own idea of the live edge. The rate is set again
  // as soon as it is not the one wanted: Shaka cancels a rate above 1 whenever the playhead is in
  // the same whole second as its seek range's end, which a sub-second latency mostly is (with the
  // rate set every 250 ms only, Shaka held 0.1 to 0.25 s more than asked).
  //
  // Shaka starts LL-HLS at an independent part, up to a segment behind; after a slow start it held
  // 1.7-1.9 s, and at 1.15x it needed 10-15 s to come back. In its first 3 s of playing the page
  // jumps once to its aim instead when more than a second too much is buffered (the jump lands in
  // what is buffered, so nothing is fetched again), and after that only the rate steers.
  function holdBuffer(want, setRate) {
    let playingSince = null;
    let jumped = !startJump;
    const steer = () => {
      if (video.paused || video.readyState < 3) {
        return;
      }
      playingSince = playingSince === null ? performance.now() : playingSince;
      const off = bufferAhead() - want;
      if (!jumped && off > 1 && performance.now() - playingSince < 3000) {
        jumped = true;
        video.currentTime += off;
        return;
      }
      const fastest = off > 0.5 ? 1.25 : 1.15;
      const rate = off > 0.05 ? Math.min(fastest, 1 + off / 2) : off < -0.05 ? Math.max(0.95, 1 + off / 2) : 1;
      if (Math.abs(video.playbackRate - rate) > 0.01) {
        setRate(rate);
      }
    };
    setInterval(steer, 250);
    video.addEventListener("ratechange", steer);
  }

  // PART-TARGET of the stream's first media playlist, in seconds (null if it has none).
  async function partTarget() {
    try {
      const multivariant = await (await fetch(config.manifest)).text();
      const first = multivariant.split("\n").find((l) => l && !l.startsWith("#"));
      if (!first) {
        return null;
      }
      const media = await (await fetch(new URL(first, new URL(config.manifest, location.href)))).text();
      const match = /#EXT-X-PART-INF:PART-TARGET=([0-9.]+)/.exec(media);
      return match ? Number(match[1]) : null;
    } catch (e) {
      return null;
    }
  }

  // The capture time of the frame on screen, from the barcode ldash-clock paints into the top rows
  // (src/media/clock.rs is the reference): 32 cells of 1/32 of the width, a row of 1/18 of the
  // height, then the same bits inverted. Null when the check fails (not a clock stream).
  const probe = document.createElement("canvas");
  const probeContext = probe.getContext("2d", { willReadFrequently: true });
  function readClock() {
    const w = video.videoWidth;
    const h = video.videoHeight;
    const band = Math.floor(h / 18);
    if (!w || band < 2) {
      return null;
    }
    if (probe.width !== w || probe.height !== 2 * band) {
      probe.width = w;
      probe.height = 2 * band;
    }
    probeContext.drawImage(video, 0, 0, w, 2 * band, 0, 0, w, 2 * band);
    const px = probeContext.getImageData(0, 0, w, 2 * band).data;
    const bright = (x, y) => {
      let sum = 0;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          sum += px[((y + dy) * w + x + dx) * 4];
        }
      }
      return sum / 9 >= 128 ? 1 : 0;
    };
    let code = 0;
    let inverse = 0;
    for (let cell = 0; cell < 32; cell++) {
      const x = Math.floor(((2 * cell + 1) * w) / 64);
      code = code * 2 + bright(x, Math.floor(band / 2));
      inverse = inverse * 2 + bright(x, band + Math.floor(band / 2));
    }
    return code + inverse === 0xffffffff ? code : null;
  }

  function unwrapStamp(code, nowMs) {
    const wrap = 4294967296;
    const base = nowMs - (nowMs % wrap);
    return [base - wrap, base, base + wrap].map((b) => b + code).reduce((a, b) => (Math.abs(a - nowMs) <= Math.abs(b - nowMs) ? a : b));
  }

  function onFrame(_, meta) {
    const code = readClock();
    // When the frame reaches the screen, on the same wall clock as the capture time.
    const shown = performance.timeOrigin + (meta && meta.expectedDisplayTime ? meta.expectedDisplayTime : performance.now());
    if (code === null) {
      glass.misses += 1;
    } else {
      const stamp = unwrapStamp(code, shown);
      pictureShown(stamp, performance.now());
      const seconds = (shown - stamp) / 1000;
      if (seconds > -1 && seconds < 120) {
        glass.reads += 1;
        glass.values.push([performance.now(), seconds]);
        if (glass.values.length > 20000) {
          glass.values.splice(0, 5000);
        }
      }
    }
    video.requestVideoFrameCallback(onFrame);
  }
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(onFrame);
  } else {
    setInterval(() => onFrame(null, null), 50);
  }

  // A frame with capture time `stamp` reached the screen at `now`: a new picture ends a freeze
  // that lasted more than 3 frame intervals.
  function pictureShown(stamp, now) {
    if (stamp === picture.stamp) {
      return;
    }
    if (picture.stamp !== null && stamp > picture.stamp) {
      picture.steps.push(stamp - picture.stamp);
      if (picture.steps.length > 30) {
        picture.steps.shift();
      }
      const sorted = picture.steps.slice().sort((a, b) => a - b);
      picture.step = sorted[Math.floor(sorted.length / 2)];
    }
    if (now - picture.since > 3 * picture.step) {
      picture.freezes.push([picture.since, now]);
      if (picture.freezes.length > 5000) {
        picture.freezes.splice(0, 1000);
      }
    }
    picture.stamp = stamp;
    picture.since = now;
  }

  video.addEventListener("seeking", () => {
    stats.seeks += 1;
    picture.seeks.push(performance.now());
  });

  function recentGlass() {
    const since = performance.now() - 1000;
    const recent = glass.values.filter(([t]) => t >= since).map(([, s]) => s).sort((a, b) => a - b);
    return recent.length ? recent[Math.floor(recent.length / 2)] : null;
  }

  let waitingSince = null;
  video.addEventListener("waiting", () => {
    // A seek (the player jumping to the live edge) waits for data too, but is not a stall.
    if (stats.playing && waitingSince === null && !video.seeking) {
      waitingSince = performance.now();
      stats.stalls += 1;
      // What the buffer held when playback stopped, for whoever reads the console.
      const ranges = [];
      for (let i = 0; i < video.buffered.length; i++) {
        ranges.push(video.buffered.start(i).toFixed(3) + "-" + video.buffered.end(i).toFixed(3));
      }
      console.warn("stall at " + video.currentTime.toFixed(3) + ", buffered " + ranges.join(" "));
    }
  });
  video.addEventListener("playing", () => {
    stats.playing = true;
    waitingSince = null;
  });

  function bufferAhead() {
    const t = video.currentTime;
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) <= t + 0.1 && t <= video.buffered.end(i)) {
        return video.buffered.end(i) - t;
      }
    }
    return 0;
  }

  function latestSegmentProtocol() {
    const entries = performance.getEntriesByType("resource").filter((e) => /\.(m4s|mp4|m4a|m4v)(\?|$)/.test(e.name));
    const last = entries[entries.length - 1];
    return last ? last.nextHopProtocol || null : null;
  }

  function show(id, text) {
    document.getElementById(id).textContent = text;
  }

  function plot() {
    const canvas = document.getElementById("plot");
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    const now = performance.now();
    const points = stats.history.filter(([t]) => now - t < 60000);
    const top = Math.max(2, ...points.map(([, l]) => l)) * 1.1;
    g.strokeStyle = "#8cf";
    g.lineWidth = 2;
    g.beginPath();
    points.forEach(([t, l], i) => {
      const x = canvas.width * (1 - (now - t) / 60000);
      const y = canvas.height * (1 - l / top);
      i === 0 ? g.moveTo(x, y) : g.lineTo(x, y);
    });
    g.stroke();
    g.fillStyle = "#aaa";
    g.fillText(top.toFixed(1) + " s", 4, 12);
    g.fillText((glass.reads ? "glass-to-glass" : "player latency") + ", last minute", 4, canvas.height - 6);
  }

  function tick() {
    const latency = sampleLatency();
    stats.latency = Number.isFinite(latency) && latency > 0 ? latency : null;
    stats.glass = recentGlass();
    stats.frozen = glass.reads ? frozen(0, performance.now()) : null;
    stats.buffer = bufferAhead();
    stats.rate = video.playbackRate;
    stats.width = video.videoWidth || null;
    stats.height = video.videoHeight || null;
    stats.currentTime = video.currentTime;
    stats.protocol = latestSegmentProtocol() || stats.protocol;
    sampleLevel();
    const shown = stats.glass !== null ? stats.glass : stats.latency;
    if (shown !== null) {
      stats.history.push([performance.now(), shown]);
      stats.history = stats.history.filter(([t]) => performance.now() - t < 60000);
    }
    show("s-glass", stats.glass === null ? "-" : stats.glass.toFixed(2) + " s");
    show("s-latency", stats.latency === null ? "-" : stats.latency.toFixed(2) + " s");
    show("s-buffer", stats.buffer.toFixed(2) + " s");
    show("s-rate", stats.rate.toFixed(2) + "×");
    show("s-resolution", stats.width ? stats.width + "×" + stats.height : "-");
    show("s-bitrate", stats.bitrate ? (stats.bitrate / 1000).toFixed(0) + " kbit/s" : "-");
    show("s-stalls", String(stats.stalls));
    show("s-protocol", stats.protocol || "-");
    const versions = {
      dashjs: () => (window.dashjs ? dashjs.Version || "" : ""),
      hlsjs: () => (window.Hls ? Hls.version : ""),
      shaka: () => (window.shaka ? shaka.Player.version : ""),
    };
    show("s-player", names[engine] + " " + versions[engine]());
    plot();
  }

  const start = { dashjs: startDash, hlsjs: startHls, shaka: startShaka }[engine];
  start().catch((e) => fail(e.message || e));
  setInterval(tick, 1000);
})();
