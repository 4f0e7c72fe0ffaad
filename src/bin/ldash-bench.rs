//! ldash-bench: measures what ldash exists for, the delay between a byte arriving from the encoder
//! and the same byte leaving for every player. It starts the servers it measures itself, on
//! loopback. This first part measures relay latency (issue 7, item 1) over HTTP/1.1 and HTTP/2
//! (cleartext), with the floor of a plain TCP socket pair in the same run.
//!
//! `cargo run --release --features bench --bin ldash-bench -- [--quick]`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// One measurement: readers over one protocol, following one growing file.
#[derive(Debug, Clone, Copy)]
struct Case {
    proto: Proto,
    readers: usize,
    chunk: usize,
    chunks: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Http1,
    Http2,
}

/// When each chunk was written, by sequence number.
type Sent = Arc<Mutex<Vec<Option<Instant>>>>;

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (readers, sizes, chunks): (&[usize], &[usize], usize) = if quick {
        (&[1, 10], &[1024], 100)
    } else {
        (&[1, 100, 1000], &[1024, 65536], 500)
    };
    println!("relay latency: a chunk every 10 ms, time from write to read (p50 / p99 / max, ms)");
    println!(
        "{:<8} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "proto", "readers", "chunk", "p50", "p99", "max"
    );
    for &chunk in sizes {
        for &n in readers {
            for proto in [Proto::Tcp, Proto::Http1, Proto::Http2] {
                if proto == Proto::Tcp && n > 1 {
                    continue; // the floor is one socket pair
                }
                let case = Case {
                    proto,
                    readers: n,
                    chunk,
                    chunks,
                };
                match run(case).await {
                    Ok(mut lat) => {
                        lat.sort_unstable();
                        let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
                        println!(
                            "{:<8} {:>7} {:>7} {:>9.3} {:>9.3} {:>9.3}",
                            format!("{proto:?}"),
                            n,
                            chunk,
                            at(0.5),
                            at(0.99),
                            at(1.0)
                        );
                    }
                    Err(err) => println!("{proto:?} {n} {chunk}: failed: {err}"),
                }
            }
        }
    }
}

async fn run(case: Case) -> Result<Vec<Duration>, String> {
    match case.proto {
        Proto::Tcp => tcp_floor(case).await,
        _ => through_ldash(case).await,
    }
}

/// A chunk: its sequence number in the first 8 bytes, then filler.
fn chunk(seq: usize, size: usize) -> Bytes {
    let mut data = vec![0x5a; size.max(8)];
    data[..8].copy_from_slice(&(seq as u64).to_be_bytes());
    Bytes::from(data)
}

/// Follows a stream of fixed-size chunks and records each chunk's latency when its last byte arrives.
#[derive(Default)]
struct Follower {
    offset: usize,
    latencies: Vec<Duration>,
}

impl Follower {
    fn feed(&mut self, data: &[u8], size: usize, sent: &Sent) {
        let now = Instant::now();
        let before = self.offset / size;
        self.offset += data.len();
        let after = self.offset / size;
        let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
        for seq in before..after {
            if let Some(Some(at)) = sent.get(seq) {
                self.latencies.push(now.saturating_duration_since(*at));
            }
        }
    }
}

async fn writer(case: Case, sent: Sent, tx: mpsc::Sender<Bytes>) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for seq in 0..case.chunks {
        tick.tick().await;
        let data = chunk(seq, case.chunk);
        if let Ok(mut sent) = sent.lock() {
            sent[seq] = Some(Instant::now());
        }
        if tx.send(data).await.is_err() {
            return;
        }
    }
}

async fn tcp_floor(case: Case) -> Result<Vec<Duration>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let sent: Sent = Arc::new(Mutex::new(vec![None; case.chunks]));
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let write = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.map_err(|e| e.to_string())?;
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        while let Some(data) = rx.recv().await {
            socket.write_all(&data).await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    });
    let mut reader = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tokio::spawn(writer(case, Arc::clone(&sent), tx));
    let mut follower = Follower::default();
    let mut buf = vec![0u8; 256 * 1024];
    while follower.offset < case.chunk * case.chunks {
        let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        follower.feed(&buf[..n], case.chunk, &sent);
    }
    let _ = write.await;
    Ok(follower.latencies)
}

async fn through_ldash(case: Case) -> Result<Vec<Duration>, String> {
    let root = std::env::temp_dir().join(format!("ldash-bench-{}", std::process::id()));
    let mut config = ldash::Config::with_root(&root);
    config.http = "127.0.0.1:0".parse().map_err(|_| "address")?;
    config.https = "127.0.0.1:0".parse().map_err(|_| "address")?;
    config.cert_dir = root.join("certs");
    config.no_h3 = true;
    let server = ldash::Server::bind(config).await.map_err(|e| e.to_string())?;
    let http = server.http_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    let client = |proto: Proto| {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .use_preconfigured_tls(tls_config()?);
        let builder = if proto == Proto::Http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        builder.build().map_err(|e| e.to_string())
    };
    let sent: Sent = Arc::new(Mutex::new(vec![None; case.chunks]));
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    }));
    let path = format!("http://{http}/ldash/upload/bench/relay.bin");
    let upload = tokio::spawn(client(Proto::Http1)?.put(path).body(body).send());
    // The first chunk makes the path exist; readers attach, then the timed chunks follow.
    tx.send(chunk(usize::MAX, case.chunk))
        .await
        .map_err(|_| "upload closed")?;
    let url = format!("http://{http}/ldash/download/bench/relay.bin");
    let reader_client = client(case.proto)?;
    let mut readers = Vec::new();
    for _ in 0..case.readers {
        let response = loop {
            let r = reader_client.get(&url).send().await.map_err(|e| e.to_string())?;
            if r.status() == 200 {
                break r;
            }
            tokio::task::yield_now().await;
        };
        let sent = Arc::clone(&sent);
        readers.push(tokio::spawn(async move {
            let mut response = response;
            let mut follower = Follower {
                offset: 0,
                latencies: Vec::new(),
            };
            // Skip the untimed first chunk.
            let total = case.chunk * (case.chunks + 1);
            let mut skipped = 0;
            while follower.offset + skipped < total {
                let Ok(Some(data)) = response.chunk().await else { break };
                let data = if skipped < case.chunk {
                    let skip = (case.chunk - skipped).min(data.len());
                    skipped += skip;
                    data.slice(skip..)
                } else {
                    data
                };
                follower.feed(&data, case.chunk, &sent);
            }
            follower.latencies
        }));
    }
    tokio::spawn(writer(case, Arc::clone(&sent), tx));
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await.map_err(|e| e.to_string())?);
    }
    let _ = upload.await;
    let _ = stop_tx.send(());
    let _ = running.await;
    let _ = std::fs::remove_dir_all(&root);
    if all.is_empty() {
        return Err("no chunk was read".into());
    }
    Ok(all)
}

/// A TLS config is required by reqwest's builder even for cleartext URLs (no provider of its own).
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok(builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}
