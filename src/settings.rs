//! The settings each part of the server takes, resolved once from the command line and the
//! environment ([`Config`]). Every "0 means off" rule, every clamp and every unit conversion is
//! here, and each value is stored once: the parts take their own settings as arguments and never
//! read [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, Congestion};
use crate::live::LiveOptions;
use crate::media::liveness::EndRule;
use crate::media::mpd::{Latency, ServiceDefaults};
use crate::media::package::PackageOptions;
use crate::pace::MinRate;
use crate::store::Limits;

/// Everything [`crate::Server`] needs, by part.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where uploads are persisted.
    pub root: PathBuf,
    /// The listeners.
    pub listen: ListenSettings,
    /// The TLS identity's source.
    pub tls: TlsSettings,
    /// The store's limits.
    pub limits: Limits,
    /// The live index's rules.
    pub live: LiveOptions,
    /// The ServiceDescription values written into MPDs that lack them.
    pub service: ServiceDefaults,
    /// How CMAF ingest channels are packaged.
    pub package: PackageOptions,
    /// What the routes need.
    pub routes: RouteSettings,
    /// Connection handling, the same for TCP and QUIC.
    pub connections: ConnectionSettings,
}

/// Where the server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSettings {
    /// Cleartext HTTP/1.1 and h2c.
    pub http: SocketAddr,
    /// TLS over TCP, and QUIC on the same port number.
    pub https: SocketAddr,
    /// Whether HTTP/3 is served.
    pub h3: bool,
    /// The metrics listener, unless off.
    pub metrics: Option<SocketAddr>,
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// A PEM certificate chain and its key; None: the development certificate.
    pub files: Option<(PathBuf, PathBuf)>,
    /// Where the development certificate is kept.
    pub cert_dir: PathBuf,
}

/// What the routes take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    /// Token uploads must carry; None: loopback peers only.
    pub upload_token: Option<String>,
    /// How long an upload may send nothing before it is aborted (at least 1 s).
    pub upload_idle_timeout: Duration,
    /// Uploads in progress per peer; None: only the store's `max_uploads` (0, or not below it).
    pub max_uploads_per_peer: Option<usize>,
    /// The minimum rate every upload must keep.
    pub upload_min_rate: MinRate,
    /// `max-age` of complete media segments: as long as the origin keeps them (the GC age), a day
    /// when it keeps them forever.
    pub media_max_age: u64,
    /// Requests held waiting for the live edge at once; None: no bound.
    pub max_held_requests: Option<usize>,
    /// Requests one client holds waiting for the live edge at once; None: no share per client.
    pub max_held_requests_per_peer: Option<usize>,
    /// Bytes a download of a growing entry may fall behind its upload before it is cut off; None:
    /// never.
    pub reader_lag_limit: Option<u64>,
    /// A folder whose node_modules overrides the embedded player libraries.
    pub player_dir: PathBuf,
}

/// How connections are handled, on every transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Time a client has for the TLS (or QUIC) handshake and for its request headers (at least 1 s).
    pub header_timeout: Duration,
    /// Time in-flight responses get at shutdown.
    pub drain_timeout: Duration,
    /// SO_SNDBUF for accepted TCP connections; None leaves the kernel's autotuning.
    pub tcp_send_buffer: Option<usize>,
    /// TCP_NOTSENT_LOWAT for accepted TCP connections; None leaves the kernel's.
    pub tcp_notsent_lowat: Option<u32>,
    /// The QUIC congestion controller.
    pub quic_congestion: Congestion,
    /// Largest request header block in bytes, on every HTTP version.
    pub max_header_bytes: usize,
    /// The cleartext (ingest) listener's idle bound and connection budget.
    pub http: ListenerBudget,
    /// The TLS (player) listener's idle bound and connection budget.
    pub https: ListenerBudget,
    /// The metrics listener's: a scraper or two, on its own budget.
    pub metrics: ListenerBudget,
    /// Bounds on QUIC connections and handshakes.
    pub quic: QuicLimits,
}

/// Bounds on QUIC connections and handshakes, against floods of handshakes that never complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicLimits {
    /// Connections at once, handshaking or established (at least 1).
    pub max_connections: usize,
    /// Handshakes in progress at once (at least 1).
    pub max_handshakes: usize,
    /// Handshakes in progress above which an unvalidated client address gets a Retry.
    pub retry_above: usize,
    /// Handshakes in progress from one validated IP address (at least 1).
    pub max_handshakes_per_peer: usize,
    /// Time a handshake and the HTTP/3 setup after it may take (at least 1 s).
    pub handshake_timeout: Duration,
}

/// How long one TCP listener's connections may idle and how many it holds: each listener has its
/// own, so a flood of one leaves the others alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerBudget {
    /// A kept-alive connection with no request in progress for this long is closed (at least 1 s).
    pub idle_timeout: Duration,
    /// Connections held at once (at least 1).
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) holds at once; None: no such limit.
    pub max_per_ip: Option<usize>,
}

/// Connections the metrics listener holds at once: Prometheus keeps one per scraper.
const METRICS_MAX_CONNECTIONS: usize = 64;

/// A day: the `max-age` of media segments when garbage collection is off.
const DAY: u64 = 86_400;

/// With a DVR window, how long a complete segment already on disk stays in memory once nobody
/// reads it: players at the live edge take it within a few segment durations, a viewer seeking
/// back is served from the file.
const LIVE_EDGE_MEMORY: Duration = Duration::from_secs(60);

/// Segments a packaged channel keeps per track to hold `window` of `segment` long segments: the
/// growing one and the complete ones that cover the window (`--window` is the least).
fn dvr_segments(window: Duration, segment: Duration) -> u64 {
    let segment = segment.as_secs_f64().max(0.1);
    (window.as_secs_f64() / segment).ceil() as u64 + 1
}

impl Settings {
    /// Resolves the options.
    pub fn from_config(config: &Config) -> Settings {
        let dvr = Some(config.dvr_window).filter(|w| !w.is_zero());
        // A folder idle for the TTL is purged, but never before the DVR window: what a DVR keeps
        // goes with its age (the live index), or after the longer of the two once nothing comes.
        let ttl = (config.ttl > 0).then(|| Duration::from_secs(config.ttl).max(dvr.unwrap_or_default()));
        // At least 0.1 s, at most a minute.
        let segment_duration =
            Duration::try_from_secs_f64(config.segment_duration.clamp(0.1, 60.0)).unwrap_or(Duration::from_secs(1));
        Settings {
            root: config.root.clone(),
            listen: ListenSettings {
                http: config.http,
                https: config.https,
                h3: !config.no_h3,
                metrics: config.metrics.addr(),
            },
            tls: TlsSettings {
                files: config.cert.clone().zip(config.key.clone()),
                cert_dir: config.cert_dir.clone(),
            },
            limits: Limits {
                max_uploads: config.max_uploads,
                max_paths: config.max_paths,
                max_memory: config.max_memory,
                max_upload_bytes: config.max_upload_bytes,
                ttl,
                memory_idle: dvr.map(|_| LIVE_EDGE_MEMORY),
            },
            live: LiveOptions {
                part_target: (config.part_target_ms > 0).then(|| config.part_target_ms as f64 / 1000.0),
                end_rule: EndRule {
                    after_segments: config.end_after_segments,
                },
                dvr_window: dvr,
            },
            service: ServiceDefaults {
                latency: (config.latency_target_ms > 0).then(|| Latency {
                    target: Duration::from_millis(config.latency_target_ms),
                    min: Duration::from_millis(config.latency_min_ms.min(config.latency_target_ms)),
                    max: Duration::from_millis(config.latency_max_ms.max(config.latency_target_ms)),
                }),
                playback_rate_min: config.playback_rate_min.clamp(0.5, 1.0),
                playback_rate_max: config.playback_rate_max.clamp(1.0, 2.0),
            },
            package: PackageOptions {
                segment_duration,
                // --window at least 2 segments, and at least the DVR window.
                window: config
                    .window
                    .max(2)
                    .max(dvr.map_or(0, |dvr| dvr_segments(dvr, segment_duration))),
            },
            routes: RouteSettings {
                upload_token: config.upload_token.clone().filter(|t| !t.is_empty()),
                upload_idle_timeout: Duration::from_secs(config.upload_idle_timeout.max(1)),
                max_uploads_per_peer: (config.max_uploads_per_peer > 0
                    && config.max_uploads_per_peer < config.max_uploads)
                    .then_some(config.max_uploads_per_peer),
                upload_min_rate: MinRate {
                    bytes: config.upload_min_bytes,
                    window: Duration::from_secs(config.upload_rate_window.max(1)),
                    grace: Duration::from_secs(config.upload_rate_grace),
                },
                media_max_age: ttl.map_or(DAY, |ttl| ttl.as_secs()),
                max_held_requests: (config.max_held_requests > 0).then_some(config.max_held_requests),
                max_held_requests_per_peer: (config.max_held_requests_per_peer > 0)
                    .then_some(config.max_held_requests_per_peer),
                reader_lag_limit: (config.reader_lag_limit > 0).then_some(config.reader_lag_limit),
                player_dir: config.player_dir.clone(),
            },
            connections: ConnectionSettings {
                header_timeout: Duration::from_secs(config.header_timeout.max(1)),
                drain_timeout: Duration::from_secs(config.drain_timeout),
                tcp_send_buffer: (config.tcp_send_buffer > 0)
                    .then(|| usize::try_from(config.tcp_send_buffer).unwrap_or(usize::MAX)),
                tcp_notsent_lowat: (config.tcp_notsent_lowat > 0)
                    .then(|| u32::try_from(config.tcp_notsent_lowat).unwrap_or(u32::MAX)),
                quic_congestion: config.quic_congestion,
                max_header_bytes: config.max_header_bytes,
                http: ListenerBudget::new(
                    config.http_idle_timeout,
                    config.http_max_connections,
                    config.http_max_connections_per_ip,
                ),
                https: ListenerBudget::new(
                    config.https_idle_timeout,
                    config.https_max_connections,
                    config.https_max_connections_per_ip,
                ),
                metrics: ListenerBudget::new(config.http_idle_timeout, METRICS_MAX_CONNECTIONS, 0),
                quic: QuicLimits {
                    max_connections: config.quic_max_connections.max(1),
                    max_handshakes: config.quic_max_handshakes.max(1),
                    retry_above: config.quic_retry_above,
                    max_handshakes_per_peer: config.quic_max_handshakes_per_peer.max(1),
                    handshake_timeout: Duration::from_secs(config.quic_handshake_timeout.max(1)),
                },
            },
        }
    }
}

impl ListenerBudget {
    /// From the options: seconds, a total and a per-address count (0: none).
    fn new(idle_secs: u64, max_connections: usize, max_per_ip: usize) -> ListenerBudget {
        ListenerBudget {
            idle_timeout: Duration::from_secs(idle_secs.max(1)),
            max_connections: max_connections.max(1),
            max_per_ip: (max_per_ip > 0).then_some(max_per_ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["ldash"];
        all.extend_from_slice(args);
        Settings::from_config(&Config::parse_from(all))
    }

    #[test]
    fn zero_means_off() {
        let s = settings(&[
            "--ttl",
            "0",
            "--reader-lag-limit",
            "0",
            "--tcp-send-buffer",
            "0",
            "--part-target-ms",
            "0",
            "--latency-target-ms",
            "0",
            "--upload-token",
            "",
        ]);
        assert_eq!(s.limits.ttl, None);
        assert_eq!(s.routes.media_max_age, DAY, "kept forever: cacheable for a day");
        assert_eq!(s.routes.reader_lag_limit, None);
        assert_eq!(s.connections.tcp_send_buffer, None);
        assert_eq!(s.live.part_target, None);
        assert_eq!(s.service.latency, None, "derived from the chunks");
        assert_eq!(s.routes.upload_token, None, "an empty token is no token");
    }

    #[test]
    fn values_are_converted_and_clamped() {
        let s = settings(&[
            "--ttl",
            "60",
            "--part-target-ms",
            "250",
            "--latency-target-ms",
            "800",
            "--latency-min-ms",
            "1000",
            "--latency-max-ms",
            "500",
            "--playback-rate-min",
            "0.1",
            "--playback-rate-max",
            "9",
            "--header-timeout",
            "0",
            "--upload-idle-timeout",
            "0",
            "--no-h3",
            "--metrics",
            "off",
        ]);
        assert_eq!(s.limits.ttl, Some(Duration::from_secs(60)));
        assert_eq!(s.routes.media_max_age, 60);
        assert_eq!(s.live.part_target, Some(0.25));
        let latency = s.service.latency.expect("a fixed target");
        assert_eq!(latency.target, Duration::from_millis(800));
        assert_eq!(latency.min, Duration::from_millis(800), "min is at most the target");
        assert_eq!(latency.max, Duration::from_millis(800), "max is at least the target");
        assert_eq!(s.service.playback_rate_min, 0.5);
        assert_eq!(s.service.playback_rate_max, 2.0);
        assert_eq!(s.connections.header_timeout, Duration::from_secs(1), "never zero");
        assert_eq!(s.routes.upload_idle_timeout, Duration::from_secs(1), "never zero");
        assert!(!s.listen.h3);
        assert_eq!(s.listen.metrics, None);
    }

    #[test]
    fn defaults_serve_a_local_test() {
        let s = settings(&[]);
        assert_eq!(s.listen.http.port(), 8080);
        assert_eq!(s.listen.https.port(), 8443);
        assert!(s.listen.h3);
        assert_eq!(s.limits.ttl, Some(Duration::from_secs(300)));
        assert_eq!(s.routes.media_max_age, 300);
        assert_eq!(s.routes.reader_lag_limit, Some(8 << 20));
        assert_eq!(s.live.end_rule.after_segments, 5);
        assert_eq!(s.tls.files, None);
        assert_eq!(s.connections.max_header_bytes, 32 << 10);
        assert_eq!(s.connections.quic.max_handshakes, 256);
        assert_eq!(s.connections.quic.retry_above, 64);
        assert_eq!(s.connections.quic.handshake_timeout, Duration::from_secs(5));
        assert_eq!(
            s.connections.http.idle_timeout,
            Duration::from_secs(60),
            "ffmpeg's kept-alive ingest"
        );
        assert_eq!(s.connections.https.idle_timeout, Duration::from_secs(30));
        assert_eq!(s.connections.http.max_connections, 1024);
        assert_eq!(s.connections.http.max_per_ip, Some(256));
        assert_eq!(s.connections.https.max_connections, 8192);
        assert_eq!(s.connections.https.max_per_ip, Some(512));
        assert_eq!(
            s.routes.max_uploads_per_peer,
            Some(64),
            "a quarter of the 256 upload slots"
        );
        assert_eq!(s.routes.upload_min_rate.bytes, 512);
        assert_eq!(s.routes.upload_min_rate.window, Duration::from_secs(30));
        assert_eq!(s.routes.upload_min_rate.grace, Duration::from_secs(10));
    }

    #[test]
    fn a_dvr_window_outlasts_the_ttl_and_the_packaged_window() {
        let s = settings(&["--dvr-window", "2h", "--ttl", "300", "--segment-duration", "2"]);
        assert_eq!(s.live.dvr_window, Some(Duration::from_secs(7200)));
        assert_eq!(
            s.limits.ttl,
            Some(Duration::from_secs(7200)),
            "purged at the longer of the two"
        );
        assert_eq!(s.routes.media_max_age, 7200);
        assert_eq!(
            s.package.window, 3601,
            "3,600 complete 2 s segments and the growing one"
        );
        assert_eq!(s.limits.memory_idle, Some(LIVE_EDGE_MEMORY));
        let s = settings(&["--dvr-window", "10", "--ttl", "0", "--window", "30"]);
        assert_eq!(s.limits.ttl, None, "a TTL of 0 still keeps folders forever");
        assert_eq!(s.package.window, 30, "--window when it is longer");
        let s = settings(&["--dvr-window", "off"]);
        assert_eq!(s.live.dvr_window, None);
        assert_eq!(s.limits.memory_idle, None, "memory is released by --max-memory alone");
        assert_eq!(s.limits.ttl, Some(Duration::from_secs(300)));
        assert_eq!(s.package.window, 30);
        assert_eq!(dvr_segments(Duration::from_secs(7), Duration::from_secs(2)), 5);
    }

    #[test]
    fn upload_shares_and_rates_resolve() {
        let s = settings(&[
            "--max-uploads",
            "16",
            "--max-uploads-per-peer",
            "16",
            "--upload-rate-window",
            "0",
        ]);
        assert_eq!(s.routes.max_uploads_per_peer, None, "a share of all slots is no share");
        assert_eq!(s.routes.upload_min_rate.window, Duration::from_secs(1), "never zero");
        let s = settings(&["--max-uploads-per-peer", "0", "--upload-min-bytes", "4K"]);
        assert_eq!(s.routes.max_uploads_per_peer, None);
        assert_eq!(s.routes.upload_min_rate.bytes, 4096);
    }

    #[test]
    fn listener_budgets_are_never_zero() {
        let s = settings(&[
            "--http-idle-timeout",
            "0",
            "--https-max-connections",
            "0",
            "--https-max-connections-per-ip",
            "0",
        ]);
        assert_eq!(s.connections.http.idle_timeout, Duration::from_secs(1));
        assert_eq!(s.connections.https.max_connections, 1);
        assert_eq!(s.connections.https.max_per_ip, None, "0: no per-address limit");
    }
}
