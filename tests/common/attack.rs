//! What the attack tests share (issue 25): ldash as a child process (so that its resident memory is
//! its own), clients from other loopback addresses (127.0.0.x, as a distributed attack would come),
//! a fresh client's first answer on every protocol, and the memory bound after an attack.
//!
//! Included with `#[path = "common/attack.rs"] mod attack;`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use testkit::origin::ldash_command;
use testkit::process::rss_kib;
use testkit::{Origin, OriginProcess, Proto};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// The memory bound after an attack: 1.2x the baseline + 16 MiB, reached within 30 s.
pub const RSS_SLACK_KIB: u64 = 16 << 10;
pub const RSS_RETURN: Duration = Duration::from_secs(30);

/// Every protocol a fresh client may come in on.
pub const EVERY_PROTOCOL: [Proto; 5] = [Proto::H1, Proto::H2c, Proto::H1Tls, Proto::H2Tls, Proto::H3];

/// The RSS bound after an attack on a process whose baseline was `baseline` KiB.
pub fn rss_bound(baseline: u64) -> u64 {
    baseline * 6 / 5 + RSS_SLACK_KIB
}

/// Raises this process's soft open-file limit to the hard one (ldash, started afterwards, inherits
/// it); returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// ldash as a child process with `options`, and any given in `LDASH_ATTACK_ARGS` (to measure other
/// settings).
pub async fn start_ldash(dir: &Path, options: &[&str]) -> OriginProcess {
    let extra = std::env::var("LDASH_ATTACK_ARGS").unwrap_or_default();
    let mut options = options.to_vec();
    options.extend(extra.split_whitespace());
    OriginProcess::start(ldash_command(env!("CARGO_BIN_EXE_ldash")), dir, &options)
        .await
        .unwrap_or_else(|e| panic!("ldash starts: {e}"))
}

/// 127.0.0.`n`: loopback, another client address.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection to `addr` from `from`.
pub async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// A TLS connection to `origin` from `from`, asking for `alpn`.
pub async fn tls_from(
    origin: &Origin,
    from: IpAddr,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = origin.tls_client(&[alpn])?;
    let tcp = connect_from(from, origin.https).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

/// A reqwest client for a TCP `proto` whose connections come from `from` (a fresh connection each).
pub fn fresh_client(origin: &Origin, proto: Proto, from: IpAddr) -> reqwest::Client {
    let tls = origin.tls_client(&[proto.alpn()]).expect("a TLS client configuration");
    let builder = reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .pool_max_idle_per_host(0)
        .use_preconfigured_tls(tls);
    let builder = match proto {
        Proto::H1 | Proto::H1Tls => builder.http1_only(),
        Proto::H2c => builder.http2_prior_knowledge(),
        _ => builder,
    };
    builder.build().expect("a reqwest client")
}

/// A client on a new connection for `proto` (TCP ones from `from`), as the live relay takes them.
pub async fn fresh_kit_client(origin: &Origin, proto: Proto, from: IpAddr) -> testkit::client::Client {
    match proto {
        Proto::H3 => tokio::time::timeout(Duration::from_secs(10), origin.connect(proto))
            .await
            .unwrap_or_else(|_| panic!("an HTTP/3 client connects within 10 s"))
            .unwrap_or_else(|e| panic!("an HTTP/3 client connects: {e}")),
        tcp => testkit::client::Client::Tcp {
            client: fresh_client(origin, tcp, from),
            base: origin.url(tcp, ""),
        },
    }
}

/// GETs /ldash/time over `proto` (from `from` over TCP) on a new connection, within 5 s; how long
/// the answer took, connection included.
pub async fn fresh_get(origin: &Origin, proto: Proto, from: IpAddr) -> Duration {
    let started = Instant::now();
    if proto == Proto::H3 {
        let client = fresh_kit_client(origin, proto, from).await;
        let response = tokio::time::timeout(Duration::from_secs(5), client.get("/ldash/time").fetch())
            .await
            .unwrap_or_else(|_| panic!("{proto:?}: no answer within 5 s"));
        assert_eq!(response.status, 200, "{proto:?} GET /ldash/time");
        return started.elapsed();
    }
    let client = fresh_client(origin, proto, from);
    let url = origin.url(proto, "/ldash/time");
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(&url).send())
        .await
        .unwrap_or_else(|_| panic!("{proto:?}: no answer within 5 s"))
        .unwrap_or_else(|e| panic!("{proto:?}: {e:?}"));
    assert_eq!(response.status(), 200, "{proto:?} GET /ldash/time");
    assert_eq!(response.version(), proto.version(), "{proto:?}");
    let _ = response.bytes().await;
    started.elapsed()
}

/// A fresh client on every protocol, one after another: each must be served within 1 s.
pub async fn fresh_on_every_protocol(origin: &Origin, from: IpAddr, during: &str) -> Vec<(Proto, Duration)> {
    let mut latencies = Vec::new();
    for proto in EVERY_PROTOCOL {
        if proto == Proto::H3 && origin.quic.is_none() {
            continue;
        }
        let took = fresh_get(origin, proto, from).await;
        assert!(
            took < Duration::from_secs(1),
            "a fresh {proto:?} client took {took:?} {during}"
        );
        latencies.push((proto, took));
    }
    latencies
}

/// Waits, polling the process's RSS (bounded by `within`), until it is at most `bound_kib`;
/// returns the last value read and when.
pub async fn rss_settles(pid: u32, bound_kib: u64, within: Duration) -> (u64, Duration) {
    let started = Instant::now();
    loop {
        let rss = rss_kib(pid);
        if rss <= bound_kib || started.elapsed() >= within {
            return (rss, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of a metric sample, scraped now.
pub async fn metric(origin: &Origin, sample: &str) -> f64 {
    origin
        .metric(sample)
        .await
        .unwrap_or_else(|e| panic!("scrape of {sample}: {e}"))
}

/// Scrapes (bounded by `within`) until `sample` satisfies `done`; its last value.
pub async fn metric_reaches(origin: &Origin, sample: &str, within: Duration, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let value = metric(origin, sample).await;
        if done(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} is {value}, not yet what was awaited, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
