// The ldash play page: plays an LL-DASH manifest with dash.js or an LL-HLS playlist with hls.js, and
// shows live statistics every second. Everything a test or a person needs is in window.ldash.stats.
"use strict";

(function () {
  const config = window.LDASH;
  const video = document.getElementById("video");
  const stats = {
    player: config.kind,
    latency: null, // seconds behind the live edge
    buffer: null, // seconds buffered ahead
    rate: 1,
    width: null,
    height: null,
    bitrate: null, // bits per second of the current representation
    stalls: 0,
    protocol: null, // nextHopProtocol of the latest segment request (h2, h3, http/1.1)
    currentTime: 0,
    playing: false,
    history: [], // [ms since page load, latency]
    error: null,
  };
  window.ldash = { stats };

  document.getElementById(config.kind === "hls" ? "as-hls" : "as-dash").classList.add("active");
  if (config.fromCdn) {
    document.getElementById("libraries").textContent =
      "dash.js and hls.js are not installed on this server (npm ci --prefix player): loading the same pinned versions from a public CDN.";
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

  async function startDash() {
    await load(config.dashUrl);
    const player = dashjs.MediaPlayer().create();
    player.updateSettings({
      streaming: {
        // Target latency comes from the MPD's ServiceDescription; catch-up keeps it there.
        liveCatchup: { enabled: true, mode: "liveCatchupModeDefault" },
        utcSynchronization: { enabled: true },
        abr: { autoSwitchBitrate: { video: true } },
      },
    });
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
    // Target the same 1.5 s as the DASH view's ServiceDescription: closer to PART-HOLD-BACK (0.6 s
    // for 0.2 s parts) hls.js stalls when it catches up. Catch-up at up to 1.1x keeps it there.
    const hls = new Hls({
      lowLatencyMode: true,
      liveSyncDuration: 1.5,
      liveMaxLatencyDuration: 6,
      maxLiveSyncPlaybackRate: 1.1,
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) {
        fail("hls.js: " + data.type + " " + data.details);
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

  let waitingSince = null;
  video.addEventListener("waiting", () => {
    // A seek (the player jumping to the live edge) waits for data too, but is not a stall.
    if (stats.playing && waitingSince === null && !video.seeking) {
      waitingSince = performance.now();
      stats.stalls += 1;
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
    g.fillText("latency, last minute", 4, canvas.height - 6);
  }

  function tick() {
    const latency = sampleLatency();
    stats.latency = Number.isFinite(latency) && latency > 0 ? latency : null;
    stats.buffer = bufferAhead();
    stats.rate = video.playbackRate;
    stats.width = video.videoWidth || null;
    stats.height = video.videoHeight || null;
    stats.currentTime = video.currentTime;
    stats.protocol = latestSegmentProtocol() || stats.protocol;
    sampleLevel();
    if (stats.latency !== null) {
      stats.history.push([performance.now(), stats.latency]);
      stats.history = stats.history.filter(([t]) => performance.now() - t < 60000);
    }
    show("s-latency", stats.latency === null ? "-" : stats.latency.toFixed(2) + " s");
    show("s-buffer", stats.buffer.toFixed(2) + " s");
    show("s-rate", stats.rate.toFixed(2) + "×");
    show("s-resolution", stats.width ? stats.width + "×" + stats.height : "-");
    show("s-bitrate", stats.bitrate ? (stats.bitrate / 1000).toFixed(0) + " kbit/s" : "-");
    show("s-stalls", String(stats.stalls));
    show("s-protocol", stats.protocol || "-");
    show("s-player", config.kind === "hls" ? "hls.js " + (window.Hls ? Hls.version : "") : "dash.js " + (window.dashjs ? dashjs.Version || "" : ""));
    plot();
  }

  (config.kind === "hls" ? startHls() : startDash()).catch((e) => fail(e.message || e));
  setInterval(tick, 1000);
})();
