//! Item 3, completed-segment fan-out: clients fetch a finished 2 MB segment again and again. ldash
//! serves it from its store (memory); nginx and caddy (Debian's packages, when installed) serve the
//! same bytes from disk under the same URL path, all under the same load generator: h2load for every
//! protocol it speaks here, this benchmark's own HTTP/3 client otherwise.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use testkit::client::{Client, H3Client};
use testkit::daemon::Daemon;
use testkit::process::Usage;
use testkit::tools::{tools_required, which};
use testkit::{Origin, Proto};

use crate::procs;
use crate::Plan;

const ROUTE: &str = "/ldash/download/bench/segment.m4s";
const SIZE: usize = 2 << 20;

/// One load run's result.
#[derive(Debug, Clone, Copy)]
struct Load {
    requests: u64,
    bytes: u64,
    seconds: f64,
    cpu: f64,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn gbits(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds / 1e9
    }
    fn cpu_per_gb(&self) -> f64 {
        self.cpu / (self.bytes as f64 / 1e9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    H1,
    H2c,
    H3,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::H1 => "HTTP/1.1",
            Kind::H2c => "HTTP/2 (h2c)",
            Kind::H3 => "HTTP/3",
        }
    }
}

pub async fn run(plan: &Plan, dir: &Path) -> Result<(), String> {
    let (clients, seconds) = if plan.quick { (8, 2) } else { (64, 10) };
    let h2load = which("h2load").ok_or("h2load is not installed (apt-get install nghttp2-client)")?;
    let body = segment();
    let ldash = procs::start_ldash(&dir.join("ldash"), &[]).await?;
    let put = ldash
        .connect(Proto::H1)
        .await?
        .put("/ldash/upload/bench/segment.m4s")
        .body(body.clone())
        .send()
        .await?;
    if !(200..300).contains(&put.status) {
        return Err(format!("upload of the segment answered {}", put.status));
    }
    let docroot = dir.join("docroot");
    let file = docroot.join(ROUTE.trim_start_matches('/'));
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&file, &body).map_err(|e| e.to_string())?;
    let nginx = match procs::start_nginx(&dir.join("nginx"), &docroot).await {
        Ok(n) => Some(n),
        Err(err) if tools_required() => return Err(format!("nginx: {err}")),
        Err(err) => {
            println!("(nginx not measured: {err})");
            None
        }
    };
    let caddy = match procs::start_caddy(&dir.join("caddy"), &docroot, &ldash.cert_pem, &ldash.key_pem).await {
        Ok(c) => Some(c),
        Err(err) if tools_required() => return Err(format!("caddy: {err}")),
        Err(err) => {
            println!("(caddy not measured: {err})");
            None
        }
    };
    let h3_by_h2load = h2load_speaks_h3(&h2load, ldash.quic).await;

    println!("\n## 3. Completed-segment fan-out\n");
    println!(
        "A finished 2 MiB segment fetched again and again by {clients} connections, one request at a time each, \
         for {seconds} s. Load: {}. CPU-s/GB is the server's user+system CPU per GB of body sent.\n",
        if h3_by_h2load {
            "h2load for every protocol"
        } else {
            "h2load for HTTP/1.1 and HTTP/2; for HTTP/3 this benchmark's client (Debian's h2load has no QUIC)"
        }
    );
    println!(
        "| server | proto | req/s | Gbit/s | CPU-s/GB | ldash / server |\n| --- | --- | ---: | ---: | ---: | ---: |"
    );
    for kind in [Kind::H1, Kind::H2c, Kind::H3] {
        let ldash_url = match kind {
            Kind::H3 => ldash.quic.map(|q| format!("https://localhost:{}{ROUTE}", q.port())),
            _ => Some(format!("http://{}{ROUTE}", ldash.http)),
        };
        let Some(url) = ldash_url else { continue };
        let ours = measure(
            &h2load,
            kind,
            &url,
            &|| ldash.usage(),
            clients,
            seconds,
            h3_by_h2load,
            &ldash,
        )
        .await;
        print_row("ldash", kind, &ours, None);
        let peers: Vec<(&str, &Daemon, Option<String>)> = [
            nginx.as_ref().map(|n| {
                let url = match kind {
                    Kind::H1 => Some(format!("http://127.0.0.1:{}{ROUTE}", n.ports[0])),
                    Kind::H2c => Some(format!("http://127.0.0.1:{}{ROUTE}", n.ports[1])),
                    Kind::H3 => None, // Debian's nginx 1.22 has no HTTP/3
                };
                ("nginx", n, url)
            }),
            caddy.as_ref().map(|c| {
                let url = match kind {
                    Kind::H3 => format!("https://localhost:{}{ROUTE}", c.ports[1]),
                    _ => format!("http://127.0.0.1:{}{ROUTE}", c.ports[0]),
                };
                ("caddy", c, Some(url))
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (name, peer, url) in peers {
            let Some(url) = url else { continue };
            let usage = || peer.usage();
            let theirs = measure(&h2load, kind, &url, &usage, clients, seconds, h3_by_h2load, &ldash).await;
            let ratio = match (&ours, &theirs) {
                (Ok(a), Ok(b)) if b.rps() > 0.0 => Some(a.rps() / b.rps()),
                _ => None,
            };
            print_row(name, kind, &theirs, ratio);
        }
    }
    Ok(())
}

fn print_row(name: &str, kind: Kind, load: &Result<Load, String>, ratio: Option<f64>) {
    match load {
        Ok(l) => println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {} |",
            kind.label(),
            l.rps(),
            l.gbits(),
            l.cpu_per_gb(),
            ratio.map_or(String::new(), |r| format!("{r:.2}x"))
        ),
        Err(err) => println!("| {name} | {} | failed: {err} | | | |", kind.label()),
    }
}

/// 2 MiB of deterministic pseudo-random bytes (incompressible, like video).
fn segment() -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(SIZE);
    while data.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(SIZE);
    data.into()
}

/// One load run against `url`; `usage` reads the server's CPU time around it. `origin` is the
/// ldash whose certificate every server here serves.
#[allow(clippy::too_many_arguments)]
async fn measure(
    h2load: &Path,
    kind: Kind,
    url: &str,
    usage: &dyn Fn() -> Usage,
    clients: usize,
    seconds: u64,
    h3_by_h2load: bool,
    origin: &Origin,
) -> Result<Load, String> {
    let before = usage();
    let mut load = if kind == Kind::H3 && !h3_by_h2load {
        h3_load(url, clients, seconds, origin).await?
    } else {
        run_h2load(h2load, kind, url, clients, seconds).await?
    };
    load.cpu = usage().cpu - before.cpu;
    Ok(load)
}

async fn run_h2load(h2load: &Path, kind: Kind, url: &str, clients: usize, seconds: u64) -> Result<Load, String> {
    let mut command = tokio::process::Command::new(h2load);
    command
        .args([
            "-c",
            &clients.to_string(),
            "-m",
            "1",
            "-t",
            "1",
            "-D",
            &seconds.to_string(),
        ])
        .kill_on_drop(true);
    match kind {
        Kind::H1 => command.arg("--h1"),
        Kind::H2c => &mut command,
        Kind::H3 => command.args(["--npn-list", "h3"]),
    };
    let out = tokio::time::timeout(Duration::from_secs(seconds + 60), command.arg(url).output())
        .await
        .map_err(|_| "h2load did not finish")?
        .map_err(|e| format!("cannot run h2load: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_h2load(&text).ok_or_else(|| {
        let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
        format!("unexpected h2load output: {tail}")
    })
}

/// Reads "finished in 10.00s, ...", "requests: N total, N started, N done, N succeeded, ..." and
/// "traffic: 1.23GB (1234567) total, ...".
fn parse_h2load(text: &str) -> Option<Load> {
    let seconds: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|r| r.split("s,").next())
        .and_then(|s| s.parse().ok())?;
    let requests: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .and_then(|r| r.split(',').find(|f| f.trim().ends_with("succeeded")))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())?;
    let bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("traffic: "))
        .and_then(|r| r.split('(').nth(1))
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())?;
    (requests > 0).then_some(Load {
        requests,
        bytes,
        seconds,
        cpu: 0.0,
    })
}

/// Whether this h2load was built with QUIC support (it then negotiates h3 with ldash).
async fn h2load_speaks_h3(h2load: &Path, quic: Option<std::net::SocketAddr>) -> bool {
    let Some(quic) = quic else { return false };
    let out = tokio::process::Command::new(h2load)
        .args(["-n", "1", "-c", "1", "--npn-list", "h3"])
        .arg(format!("https://localhost:{}/ldash/time", quic.port()))
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), out).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains("Application protocol: h3") && text.contains("1 succeeded")
        }
        _ => false,
    }
}

/// HTTP/3 load: `clients` connections, each fetching `url` again and again for `seconds`.
async fn h3_load(url: &str, clients: usize, seconds: u64, origin: &Origin) -> Result<Load, String> {
    let rest = url
        .strip_prefix("https://localhost:")
        .ok_or("an https://localhost URL")?;
    let (port, route) = rest.split_at(rest.find('/').ok_or("a path")?);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().map_err(|_| "port")?;
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Client::H3(H3Client::connect(addr, origin.tls_client(&[b"h3"])?).await?));
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        let route = route.to_owned();
        tasks.spawn(async move {
            let (mut requests, mut bytes) = (0u64, 0u64);
            while Instant::now() < until {
                let Ok(mut body) = conn.get(&route).send().await else {
                    break;
                };
                if body.status != 200 {
                    break;
                }
                let mut got = 0;
                while let Ok(Some(piece)) = body.chunk().await {
                    got += piece.len();
                }
                if got == SIZE {
                    requests += 1;
                }
                bytes += got as u64;
            }
            (requests, bytes)
        });
    }
    let (mut requests, mut bytes) = (0, 0);
    while let Some(Ok((r, b))) = tasks.join_next().await {
        requests += r;
        bytes += b;
    }
    Ok(Load {
        requests,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        cpu: 0.0,
    })
}
