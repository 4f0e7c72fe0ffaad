//! Every option of the server, from the command line or the environment, with defaults that serve a
//! local test (`cargo run --release` and go). No logic lives here beyond parsing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// ldash: a low-latency live origin for chunked CMAF ingest, LL-DASH and LL-HLS.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ldash",
    version,
    long_version = concat!(env!("CARGO_PKG_VERSION"), "\nplay page: ", env!("LDASH_PLAYER_LIBRARIES")),
    about
)]
pub struct Config {
    /// Folder where completed uploads are persisted and served from after a restart.
    #[arg(env = "LDASH_ROOT", default_value = "./www")]
    pub root: PathBuf,

    /// Cleartext listener (HTTP/1.1, and HTTP/2 with prior knowledge), used by encoders for ingest.
    #[arg(long, env = "LDASH_HTTP", default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,

    /// TLS listener (HTTP/1.1 and HTTP/2 over TCP; HTTP/3 over UDP on the same port number).
    #[arg(long, env = "LDASH_HTTPS", default_value = "[::]:8443")]
    pub https: SocketAddr,

    /// Listener for Prometheus metrics (`GET /metrics`), apart from the public ports; `off` turns it
    /// off.
    #[arg(long, env = "LDASH_METRICS", default_value = "127.0.0.1:9464", value_parser = parse_listen)]
    pub metrics: Listen,

    /// Turn the HTTP/3 (QUIC) listener off.
    #[arg(long, env = "LDASH_NO_H3")]
    pub no_h3: bool,

    /// PEM certificate chain for the TLS listeners. Without --cert/--key a self-signed development
    /// certificate for localhost is generated into --cert-dir on first start and reused later.
    #[arg(long, env = "LDASH_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key matching --cert.
    #[arg(long, env = "LDASH_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Where the generated development certificate is kept.
    #[arg(long, env = "LDASH_CERT_DIR", default_value = "./certs")]
    pub cert_dir: PathBuf,

    /// Token that uploads and deletes must present (Authorization: Bearer TOKEN, or as the password
    /// of Basic credentials). Without it, only loopback peers may upload.
    #[arg(long, env = "LDASH_UPLOAD_TOKEN", hide_env_values = true)]
    pub upload_token: Option<String>,

    /// Seconds after which a folder with no new upload is purged from memory and disk (0: never).
    #[arg(long, env = "LDASH_TTL", default_value_t = 300)]
    pub ttl: u64,

    /// Bytes of segment data kept in memory; completed, persisted entries beyond it are served from
    /// disk. Suffixes K, M, G (powers of 1024) are accepted.
    #[arg(long, env = "LDASH_MAX_MEMORY", default_value = "1G", value_parser = parse_size)]
    pub max_memory: u64,

    /// Largest accepted upload body (413 beyond it). Suffixes K, M, G accepted.
    #[arg(long, env = "LDASH_MAX_UPLOAD_BYTES", default_value = "1G", value_parser = parse_size)]
    pub max_upload_bytes: u64,

    /// Uploads in progress at once (503 beyond it).
    #[arg(long, env = "LDASH_MAX_UPLOADS", default_value_t = 256)]
    pub max_uploads: usize,

    /// Paths stored at once (507 beyond it).
    #[arg(long, env = "LDASH_MAX_PATHS", default_value_t = 100_000)]
    pub max_paths: usize,

    /// Seconds an upload may go without receiving a byte before it is aborted.
    #[arg(long, env = "LDASH_UPLOAD_IDLE_TIMEOUT", default_value_t = 30)]
    pub upload_idle_timeout: u64,

    /// Uploads in progress at once from one peer (an IPv4 address, or an IPv6 /64), out of
    /// --max-uploads (503 beyond it); 0, or a value not below --max-uploads: no share per peer.
    /// Encoders behind one address (NAT, or all on the origin's host) share it: one ffmpeg holds
    /// one upload per representation plus the manifest.
    #[arg(long, env = "LDASH_MAX_UPLOADS_PER_PEER", default_value_t = 64)]
    pub max_uploads_per_peer: usize,

    /// Bytes an upload must deliver in every --upload-rate-window (the first one lengthened by
    /// --upload-rate-grace); one that delivers fewer is cut (408) and its slot freed. 0: no
    /// minimum. Suffixes K, M, G accepted.
    #[arg(long, env = "LDASH_UPLOAD_MIN_BYTES", default_value = "512", value_parser = parse_size)]
    pub upload_min_bytes: u64,

    /// Seconds of the window --upload-min-bytes is counted over (at least 1).
    #[arg(long, env = "LDASH_UPLOAD_RATE_WINDOW", default_value_t = 30)]
    pub upload_rate_window: u64,

    /// Seconds added to an upload's first --upload-rate-window (an encoder's first fragment may
    /// take a keyframe interval or two).
    #[arg(long, env = "LDASH_UPLOAD_RATE_GRACE", default_value_t = 10)]
    pub upload_rate_grace: u64,

    /// A live stream with no upload for this many segment durations is marked ended: its LL-HLS
    /// playlists get EXT-X-ENDLIST and its MPD a mediaPresentationDuration (0: never).
    #[arg(long, env = "LDASH_END_AFTER_SEGMENTS", default_value_t = 5)]
    pub end_after_segments: u32,

    /// CMAF ingest: the segment duration (seconds) ldash cuts a channel's tracks into; a segment
    /// starts at the first fragment with a sync sample from its time on (keep the encoder's
    /// keyframe interval a divisor of it). From 0.1 to 60.
    #[arg(long, env = "LDASH_SEGMENT_DURATION", default_value_t = 1.0)]
    pub segment_duration: f64,

    /// CMAF ingest: segments kept per track (at least 2); older ones are removed.
    #[arg(long, env = "LDASH_WINDOW", default_value_t = 30)]
    pub window: u64,

    /// DVR: how long every segment of every stream is kept, whatever the encoder deletes (its
    /// DELETE is answered 202 and carried out once the segment is older), and how far back the
    /// MPD's timeShiftBufferDepth and the LL-HLS playlists reach. Seconds, or with a unit (600,
    /// 90s, 10m, 2h, 1d; at most 30 days); 0 or off: only the encoder's window (docs/dvr.md).
    #[arg(long, env = "LDASH_DVR_WINDOW", default_value = "off", value_parser = parse_window)]
    pub dvr_window: Duration,

    /// Requests held at once waiting for the live edge (503 with a reason beyond it): LL-HLS
    /// blocking playlist reloads, requests for the next segment before its upload starts, and
    /// byte ranges of parts not yet complete. Each is cheap, but HTTP/2 and HTTP/3 multiply them by
    /// their streams per connection. 0: no bound.
    #[arg(long, env = "LDASH_MAX_HELD_REQUESTS", default_value_t = 16_384)]
    pub max_held_requests: usize,

    /// Requests held at once from one client address (an IPv6 client: its /64), out of
    /// --max-held-requests (503 beyond it), so that one client cannot take them all. A viewer holds
    /// two or three; a CDN edge or a carrier's NAT puts many behind one address: raise it (or 0)
    /// for an origin behind a CDN.
    #[arg(long, env = "LDASH_MAX_HELD_REQUESTS_PER_PEER", default_value_t = 1024)]
    pub max_held_requests_per_peer: usize,

    /// Bytes a download of a growing file may fall behind the upload (beyond where it started)
    /// before it is cut off with an error (0: never). Suffixes K, M, G accepted.
    #[arg(long, env = "LDASH_READER_LAG_LIMIT", default_value = "8M", value_parser = parse_size)]
    pub reader_lag_limit: u64,

    /// Kernel send buffer (SO_SNDBUF) of each TCP connection, in bytes (suffixes K, M, G); 0 keeps
    /// the kernel's autotuning. A bound makes --reader-lag-limit cut slow readers sooner: an
    /// autotuned buffer can hold megabytes of a slow reader's stream.
    #[arg(long, env = "LDASH_TCP_SEND_BUFFER", default_value = "0", value_parser = parse_size)]
    pub tcp_send_buffer: u64,

    /// TCP_NOTSENT_LOWAT of each TCP connection, in bytes (suffixes K, M, G): how much not yet sent
    /// data the kernel holds beyond what is in flight. Small, a playlist answer queues behind less
    /// of a segment on a far HTTP/2 connection; 0 keeps the kernel's (unbounded) default.
    #[arg(long, env = "LDASH_TCP_NOTSENT_LOWAT", default_value = "0", value_parser = parse_size)]
    pub tcp_notsent_lowat: u64,

    /// QUIC congestion controller for HTTP/3: bbr (quinn's BBR, which quinn marks experimental) or
    /// cubic (loss-based, quinn's default). BBR by default: through random loss, as on Wi-Fi and
    /// mobile paths, quinn's CUBIC collapses (hls.js over HTTP/3 at 100 ms and 2% loss: 27 s of 30
    /// frozen with CUBIC, 2.4 s with BBR; a 2 MB segment through 5% loss 25 s slower than clean with
    /// CUBIC, 0.4 s with BBR).
    #[arg(long, env = "LDASH_QUIC_CONGESTION", value_enum, default_value_t = Congestion::Bbr)]
    pub quic_congestion: Congestion,

    /// Seconds a client has from connecting to its first whole request head, TLS handshake
    /// included (a connection that sends nothing is closed then), and from the first byte of each
    /// later HTTP/1.1 request head to its end (against slowloris).
    #[arg(long, env = "LDASH_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,

    /// Largest request header block, in bytes (suffixes K, M accepted), on every HTTP version:
    /// HTTP/1.1 answers 431 once the unfinished head passes it (checked as the bytes arrive, so
    /// no more than about this much is buffered); HTTP/2 advertises it as
    /// SETTINGS_MAX_HEADER_LIST_SIZE and refuses a bigger header list (431, then RST_STREAM; a
    /// header block that keeps growing past it ends the connection); HTTP/3 refuses a HEADERS
    /// frame (or any frame but DATA) that declares more at its frame header, before its bytes are
    /// read (431).
    #[arg(long, env = "LDASH_MAX_HEADER_BYTES", default_value = "32K", value_parser = parse_header_bytes)]
    pub max_header_bytes: usize,

    /// Seconds a kept-alive connection on the cleartext (ingest) listener may go without a request
    /// in progress before it is closed. ffmpeg with -http_persistent 1 uploads every segment
    /// duration on each connection and fails for good when one is closed under it, so this is well
    /// above any segment duration (a request in progress, such as a held download, is never idle).
    #[arg(long, env = "LDASH_HTTP_IDLE_TIMEOUT", default_value_t = 60)]
    pub http_idle_timeout: u64,

    /// Seconds a kept-alive connection on the TLS (player) listener may go without a request in
    /// progress before it is closed (players reload playlists every part or segment; a blocking
    /// reload in progress is not idle).
    #[arg(long, env = "LDASH_HTTPS_IDLE_TIMEOUT", default_value_t = 30)]
    pub https_idle_timeout: u64,

    /// Connections the cleartext (ingest) listener holds at once; beyond it a new connection is
    /// closed at once. Budgeted apart from --https-max-connections, so a flood of one listener
    /// leaves the other's budget alone.
    #[arg(long, env = "LDASH_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,

    /// Connections one client address (an IPv6 client: its /64) may hold on the cleartext listener
    /// at once; beyond it its new connection is closed at once (0: no per-address limit).
    #[arg(long, env = "LDASH_HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub http_max_connections_per_ip: usize,

    /// Connections the TLS (player) listener holds at once (over TCP; HTTP/3 is budgeted by QUIC);
    /// beyond it a new connection is closed at once.
    #[arg(long, env = "LDASH_HTTPS_MAX_CONNECTIONS", default_value_t = 8192)]
    pub https_max_connections: usize,

    /// Connections one client address (an IPv6 client: its /64) may hold on the TLS listener at
    /// once (0: no per-address limit). A CDN edge or a carrier's NAT puts many viewers behind one
    /// address: raise it (or 0) for an origin behind a CDN.
    #[arg(long, env = "LDASH_HTTPS_MAX_CONNECTIONS_PER_IP", default_value_t = 512)]
    pub https_max_connections_per_ip: usize,

    /// QUIC connections at once, handshaking or established; a new one beyond it is refused
    /// (CONNECTION_REFUSED: browsers fall back to HTTP/2).
    #[arg(long, env = "LDASH_QUIC_MAX_CONNECTIONS", default_value_t = 4096)]
    pub quic_max_connections: usize,

    /// QUIC handshakes in progress at once; a new one beyond it is refused.
    #[arg(long, env = "LDASH_QUIC_MAX_HANDSHAKES", default_value_t = 256)]
    pub quic_max_handshakes: usize,

    /// QUIC handshakes in progress above which a client must prove its address first (a stateless
    /// Retry, one more round trip) before ldash keeps any state for it; 0: always.
    #[arg(long, env = "LDASH_QUIC_RETRY_ABOVE", default_value_t = 64)]
    pub quic_retry_above: usize,

    /// QUIC handshakes in progress from one IP address whose address was validated (by a Retry or
    /// a token); a new one beyond it is refused.
    #[arg(long, env = "LDASH_QUIC_MAX_HANDSHAKES_PER_PEER", default_value_t = 32)]
    pub quic_max_handshakes_per_peer: usize,

    /// Seconds a QUIC handshake (and the HTTP/3 setup after it) may take.
    #[arg(long, env = "LDASH_QUIC_HANDSHAKE_TIMEOUT", default_value_t = 5)]
    pub quic_handshake_timeout: u64,

    /// Seconds in-flight responses get to finish at shutdown.
    #[arg(long, env = "LDASH_DRAIN_TIMEOUT", default_value_t = 5)]
    pub drain_timeout: u64,

    /// A folder whose node_modules (after `npm ci --prefix player`, or `npm install` of other
    /// versions) overrides the dash.js, hls.js and Shaka Player built into the binary.
    #[arg(long, env = "LDASH_PLAYER_DIR", default_value = "./player")]
    pub player_dir: PathBuf,

    /// LL-HLS part duration wanted, in milliseconds: each part groups as many whole CMAF chunks as
    /// come closest (0.1 s chunks and 300: three a part), and PART-TARGET is that many times the
    /// longest chunk, fixed for the stream's life. 0: one chunk a part (the smallest the chunking
    /// allows). Apple asks for at least the viewers' round trip, and three times it (section
    /// 14.2): parts the size of the round trip cost hls.js two round trips each. LL-DASH is
    /// unaffected (chunk by chunk).
    #[arg(long, env = "LDASH_PART_TARGET_MS", default_value_t = 0)]
    pub part_target_ms: u64,

    /// Target live latency (milliseconds) written into MPDs that have no ServiceDescription latency;
    /// 0 derives it from the longest CMAF chunk observed (four chunks + 200 ms, min half of that,
    /// max three times: 600 ms for 0.1 s chunks).
    #[arg(long, env = "LDASH_LATENCY_TARGET_MS", default_value_t = 0)]
    pub latency_target_ms: u64,

    /// Lowest live latency (milliseconds) the ServiceDescription allows, with --latency-target-ms.
    #[arg(long, env = "LDASH_LATENCY_MIN_MS", default_value_t = 1000)]
    pub latency_min_ms: u64,

    /// Highest live latency (milliseconds) the ServiceDescription allows before players catch up,
    /// with --latency-target-ms.
    #[arg(long, env = "LDASH_LATENCY_MAX_MS", default_value_t = 3000)]
    pub latency_max_ms: u64,

    /// Slowest playback rate players may use to fall back to the target latency.
    #[arg(long, env = "LDASH_PLAYBACK_RATE_MIN", default_value_t = 0.92)]
    pub playback_rate_min: f64,

    /// Fastest playback rate players may use to catch up with the target latency.
    #[arg(long, env = "LDASH_PLAYBACK_RATE_MAX", default_value_t = 1.08)]
    pub playback_rate_max: f64,
}

impl Config {
    /// A configuration with every default, for `root`; tests change the fields they need.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        let mut config = Config::parse_from(["ldash"]);
        config.root = root.into();
        config
    }
}

/// The QUIC congestion controller (`--quic-congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default.
    Cubic,
    /// BBR as quinn implements it (marked experimental by quinn).
    Bbr,
}

/// An optional listener: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Not listening.
    Off,
    /// Listening on this address.
    At(SocketAddr),
}

impl Listen {
    /// The address, unless off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(addr) => Some(addr),
        }
    }
}

/// Parses `off` or a socket address such as `127.0.0.1:9464` or `[::]:9464`.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    text.parse()
        .map(Listen::At)
        .map_err(|_| format!("'{text}' is neither an address such as 127.0.0.1:9464 nor 'off'"))
}

/// The longest DVR window accepted: a bound that keeps every count of segments and every time
/// derived from it far from overflowing.
pub const MAX_DVR_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Parses a DVR window: `off` or `0` (zero: off), whole seconds (`600`), or a number with a unit
/// `s`, `m`, `h` or `d` (`90s`, `10m`, `2h`, `1d`), at most [`MAX_DVR_WINDOW`].
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 600, 10m or 2h"))?;
    let unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{text}' has an unknown unit (use s, m, h or d)")),
    };
    match value.checked_mul(unit).map(Duration::from_secs) {
        Some(window) if window <= MAX_DVR_WINDOW => Ok(window),
        _ => Err(format!("'{text}' is longer than the 30 days a DVR window may be")),
    }
}

/// Parses a request header limit: a size ([`parse_size`]) from 1K to 16M.
pub fn parse_header_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_size(text)?;
    if !(1 << 10..=16 << 20).contains(&bytes) {
        return Err(format!("'{text}' is outside 1K to 16M"));
    }
    usize::try_from(bytes).map_err(|_| format!("'{text}' is too large"))
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 1048576, 512M or 2G"))?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("'{text}' has an unknown unit (use K, M or G)")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5T").is_err());
        assert!(parse_size("99999999999999999G").is_err());
    }

    #[test]
    fn dvr_windows_take_seconds_or_a_unit() {
        assert_eq!(parse_window("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_window("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_window("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_window("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_window(" 2H "), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_window("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_window("0"), Ok(Duration::ZERO));
        assert_eq!(parse_window("off"), Ok(Duration::ZERO));
        assert_eq!(parse_window("30d"), Ok(MAX_DVR_WINDOW));
        for bad in [
            "",
            "h",
            "2w",
            "1.5h",
            "-5",
            "31d",
            "99999999999999999999",
            "18446744073709551615d",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(Config::with_root("www").dvr_window, Duration::ZERO, "off by default");
        let config = Config::parse_from(["ldash", "--dvr-window", "2h"]);
        assert_eq!(config.dvr_window, Duration::from_secs(7200));
    }

    #[test]
    fn header_limit_is_a_size_within_bounds() {
        assert_eq!(parse_header_bytes("32K"), Ok(32 << 10));
        assert!(parse_header_bytes("100").is_err(), "below 1K no browser request fits");
        assert!(parse_header_bytes("1G").is_err());
        assert_eq!(Config::with_root("www").max_header_bytes, 32 << 10);
    }

    #[test]
    fn defaults_match_the_original_server() {
        let config = Config::with_root("www");
        assert_eq!(config.http.port(), 8080);
        assert_eq!(config.https.port(), 8443);
        assert_eq!(config.ttl, 300);
        assert_eq!(config.metrics, Listen::At("127.0.0.1:9464".parse().expect("address")));
    }

    #[test]
    fn metrics_listener_takes_an_address_or_off() {
        assert_eq!(parse_listen("off"), Ok(Listen::Off));
        assert_eq!(parse_listen("OFF"), Ok(Listen::Off));
        assert_eq!(
            parse_listen("[::]:9100"),
            Ok(Listen::At("[::]:9100".parse().expect("address")))
        );
        assert!(parse_listen("9464").is_err());
        let config = Config::parse_from(["ldash", "--metrics", "off"]);
        assert_eq!(config.metrics.addr(), None);
    }
}
