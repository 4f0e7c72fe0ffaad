//! Item 1, relay latency: an uploader writes a chunk every 10 ms into a growing file; N readers, each
//! on a connection of its own, download it while it grows; the latency of a chunk is the time its
//! last byte is read minus the time it was written. The floor is the same chunks through a plain
//! TCP socket pair on loopback.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use testkit::client::Client;
use testkit::{OriginProcess, Proto};

use crate::clients::{self, Download};
use crate::stats::Summary;

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// None: the TCP floor.
    pub proto: Option<Proto>,
    pub readers: usize,
    pub chunk: usize,
    pub chunks: usize,
}

/// When each chunk was written, in nanoseconds since `base` (0: not yet).
struct Sent {
    base: Instant,
    at: Vec<AtomicU64>,
}

impl Sent {
    fn new(chunks: usize) -> Arc<Sent> {
        Arc::new(Sent {
            base: Instant::now(),
            at: (0..chunks).map(|_| AtomicU64::new(0)).collect(),
        })
    }
    fn mark(&self, seq: usize) {
        let nanos = self.base.elapsed().as_nanos() as u64;
        if let Some(slot) = self.at.get(seq) {
            slot.store(nanos.max(1), Ordering::Release);
        }
    }
    fn since(&self, seq: usize, now: Instant) -> Option<Duration> {
        let nanos = self.at.get(seq)?.load(Ordering::Acquire);
        (nanos > 0).then(|| now.saturating_duration_since(self.base + Duration::from_nanos(nanos)))
    }
}

/// Follows a stream of fixed-size chunks; records each chunk's latency when its last byte arrives.
struct Follower {
    offset: usize,
    size: usize,
    latencies: Vec<Duration>,
}

impl Follower {
    fn feed(&mut self, len: usize, sent: &Sent) {
        let now = Instant::now();
        let before = self.offset / self.size;
        self.offset += len;
        for seq in before..self.offset / self.size {
            if let Some(d) = sent.since(seq, now) {
                self.latencies.push(d);
            }
        }
    }
}

fn chunk(size: usize) -> Bytes {
    Bytes::from(vec![0x5a; size])
}

async fn writer<T>(case: Case, sent: Arc<Sent>, tx: mpsc::Sender<T>, item: impl Fn(Bytes) -> T) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let data = chunk(case.chunk);
    for seq in 0..case.chunks {
        tick.tick().await;
        sent.mark(seq);
        if tx.send(item(data.clone())).await.is_err() {
            return;
        }
    }
}

pub async fn run(case: Case, server: &OriginProcess, id: usize) -> Result<Summary, String> {
    let mut latencies = match case.proto {
        None => tcp_floor(case).await?,
        Some(proto) => through_ldash(case, proto, server, id).await?,
    };
    let expected = case.readers * case.chunks;
    if latencies.len() < expected {
        return Err(format!("only {} of {expected} chunk reads completed", latencies.len()));
    }
    Ok(Summary::of(&mut latencies))
}

async fn tcp_floor(case: Case) -> Result<Vec<Duration>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let sent = Sent::new(case.chunks);
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
    tokio::spawn(writer(case, Arc::clone(&sent), tx, |b| b));
    let mut follower = Follower {
        offset: 0,
        size: case.chunk,
        latencies: Vec::new(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    while follower.offset < case.chunk * case.chunks {
        let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        follower.feed(n, &sent);
    }
    let _ = write.await;
    Ok(follower.latencies)
}

async fn through_ldash(case: Case, proto: Proto, server: &OriginProcess, id: usize) -> Result<Vec<Duration>, String> {
    let route = format!("/ldash/download/bench/relay-{id}.bin");
    let uploader = server.connect(Proto::H1).await?;
    let (tx, upload) = clients::upload_stream(&uploader, &format!("/ldash/upload/bench/relay-{id}.bin"));
    // An untimed first chunk; readers attach once the path exists, then the timed chunks follow.
    tx.send(Ok(chunk(case.chunk))).await.map_err(|_| "upload closed")?;
    let probe = server.connect(Proto::H1).await?;
    wait_exists(&probe, &route).await?;

    let sent = Sent::new(case.chunks);
    let attached = Arc::new(AtomicUsize::new(0));
    let all_attached = Arc::new(Notify::new());
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..case.readers {
        // HTTP/1.1 readers use the lean raw client; the others need their protocol stacks.
        let conn = match proto {
            Proto::H1 => None,
            _ => Some(server.connect(proto).await?),
        };
        let http = server.http;
        let (sent, attached, all_attached, route) = (
            Arc::clone(&sent),
            Arc::clone(&attached),
            Arc::clone(&all_attached),
            route.clone(),
        );
        readers.spawn(async move {
            let (status, mut body) = match &conn {
                Some(conn) => {
                    let response = conn.get(&route).send().await?;
                    (response.status, Download::Kit(Box::new(response)))
                }
                None => {
                    let (status, body) = clients::raw_get(http, &route).await?;
                    (status, Download::Raw(body))
                }
            };
            if status != 200 {
                return Err(format!("reader got status {status}"));
            }
            let mut follower = Follower {
                offset: 0,
                size: case.chunk,
                latencies: Vec::new(),
            };
            // The untimed first chunk: count it, then announce this reader is attached.
            let mut skipped = 0;
            let total = case.chunk * case.chunks;
            while follower.offset < total {
                let Some(data) = body.chunk().await? else { break };
                let mut len = data.len();
                if skipped < case.chunk {
                    let skip = (case.chunk - skipped).min(len);
                    skipped += skip;
                    len -= skip;
                    if skipped == case.chunk && attached.fetch_add(1, Ordering::AcqRel) + 1 == case.readers {
                        all_attached.notify_one();
                    }
                }
                follower.feed(len, &sent);
            }
            drop(conn);
            Ok::<_, String>(follower.latencies)
        });
    }
    let waiting = all_attached.notified();
    if attached.load(Ordering::Acquire) < case.readers {
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .map_err(|_| "readers did not attach within 60 s")?;
    }
    tokio::spawn(writer(case, Arc::clone(&sent), tx, Ok));
    let mut all = Vec::with_capacity(case.readers * case.chunks);
    let deadline = Duration::from_secs(60 + case.chunks as u64 / 50);
    while let Ok(Some(joined)) = tokio::time::timeout(deadline, readers.join_next()).await {
        all.extend(joined.map_err(|e| e.to_string())??);
    }
    let _ = upload.await;
    Ok(all)
}

/// Waits (bounded) until `route` answers 200; the body is dropped.
pub async fn wait_exists(conn: &Client, route: &str) -> Result<(), String> {
    for _ in 0..2000 {
        if conn.get(route).send().await?.status == 200 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("{route} did not appear within 2 s"))
}
