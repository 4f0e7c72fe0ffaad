//! The servers under test, each in a process of its own so that its CPU time and memory are its own:
//! ldash (this binary re-run as `ldash-bench serve`, which runs the ldash library exactly as the
//! `ldash` binary does, with logging off), nginx and caddy from Debian's packages. Also what a
//! process costs, read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// CPU time and memory of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds, summed over the tree.
    pub cpu: f64,
    /// Resident memory in bytes, summed over the tree.
    pub rss: u64,
}

/// Reads /proc for `pid` and all of its descendants (nginx and caddy fork workers).
pub fn usage(pid: u32) -> Usage {
    let mut total = Usage::default();
    for p in tree(pid) {
        if let Some(u) = one(p) {
            total.cpu += u.cpu;
            total.rss += u.rss;
        }
    }
    total
}

fn one(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Usage {
        cpu: ticks / clock_ticks(),
        rss: rss_kb * 1024,
    })
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    100.0
}

fn tree(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    all
}

/// A server process, killed when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
    pub fn usage(&self) -> Usage {
        usage(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // nginx forks workers that would outlive a killed master, and a live master replaces a worker
        // that dies: end the whole tree, the master first.
        for pid in tree(self.pid()) {
            kill(pid);
        }
        let _ = self.child.start_kill();
    }
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A running ldash and where it listens.
pub struct Ldash {
    pub proc: Proc,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub quic: Option<SocketAddr>,
    /// Where its Prometheus metrics are served.
    pub metrics: Option<SocketAddr>,
    /// The certificate it serves (PEM), for clients to trust.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// Starts ldash in a child process with a fresh root under `dir` and extra options `args`.
pub async fn start_ldash(dir: &Path, args: &[&str]) -> Result<Ldash, String> {
    let root = dir.join("www");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg(&root)
        .args([
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--cert-dir",
        ])
        .arg(&certs)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start ldash: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .map_err(|_| "ldash did not start within 20 s")?
        .map_err(|e| e.to_string())?
        .ok_or("ldash exited at start-up")?;
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<SocketAddr>().ok())
    };
    let (Some(http), Some(https)) = (field("http="), field("https=")) else {
        return Err(format!("unexpected start-up line from ldash: {ready}"));
    };
    let quic = field("quic=");
    let metrics = field("metrics=");
    Ok(Ldash {
        proc: Proc { child },
        http,
        https,
        quic,
        metrics,
        cert_pem: certs.join("cert.pem"),
        key_pem: certs.join("key.pem"),
    })
}

impl Ldash {
    /// The value of an unlabelled metric, scraped from /metrics.
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> Result<f64, String> {
        let addr = self.metrics.ok_or("ldash serves no metrics")?;
        let text = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| format!("no metric {name}"))
    }
}

/// `ldash-bench serve ROOT [OPTIONS]`: the server side, run in its own process by [`start_ldash`].
/// Prints one line with the bound addresses, then serves until its standard input closes (so it
/// never outlives the benchmark).
pub async fn serve(args: Vec<String>) -> std::process::ExitCode {
    use clap::Parser;
    // Logging is off, as an operator would tune it for load; LDASH_BENCH_LOG=info (a filter) turns
    // ldash's log on, on the benchmark's standard error.
    if let Ok(filter) = std::env::var("LDASH_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let config = match ldash::Config::try_parse_from(std::iter::once("ldash".to_owned()).chain(args)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = match ldash::Server::bind(config).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("ldash: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let quic = server.quic_addr().map(|a| format!(" quic={a}")).unwrap_or_default();
    let metrics = server
        .metrics_addr()
        .map(|a| format!(" metrics={a}"))
        .unwrap_or_default();
    println!(
        "ready http={} https={}{quic}{metrics}",
        server.http_addr(),
        server.https_addr()
    );
    server
        .run(async {
            // Discard whatever arrives (nothing does) without keeping it, until the end.
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 1024];
            while matches!(tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
    std::process::ExitCode::SUCCESS
}

/// A free TCP port on loopback (and, for QUIC, its UDP twin), released for a server to bind.
pub fn free_port(udp_too: bool) -> Result<u16, String> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = tcp.local_addr().map_err(|e| e.to_string())?.port();
        if !udp_too || std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port pair".into())
}

/// Waits until something accepts TCP connections on `port`.
async fn wait_listening(port: u16, what: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what} did not listen on port {port} within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// nginx serving `docroot` over HTTP/1.1 on one port and HTTP/2 (prior knowledge) on another.
pub struct Nginx {
    pub proc: Proc,
    pub h1: u16,
    pub h2c: u16,
}

pub async fn start_nginx(dir: &Path, docroot: &Path) -> Result<Nginx, String> {
    let exe = which("nginx").ok_or("nginx is not installed")?;
    let (h1, h2c) = (free_port(false)?, free_port(false)?);
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    // Tuned as an operator would for static files: a worker per core, sendfile, no access log.
    let conf = format!(
        "worker_processes 2;\nerror_log {dir}/logs/error.log error;\npid {dir}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
         keepalive_requests 1000000;\n  types {{ video/iso.segment m4s; }}\n\
         server {{ listen 127.0.0.1:{h1}; root {root}; }}\n\
         server {{ listen 127.0.0.1:{h2c} http2; root {root}; }}\n}}\n",
        dir = dir.display(),
        root = docroot.display(),
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&file)
        .args(["-g", "daemon off; user root;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let proc = Proc { child };
    wait_listening(h1, "nginx").await?;
    wait_listening(h2c, "nginx").await?;
    Ok(Nginx { proc, h1, h2c })
}

/// caddy serving `docroot` over HTTP/1.1 and h2c on one cleartext port, and HTTP/3 (and TLS TCP)
/// on another with the given certificate.
pub struct Caddy {
    pub proc: Proc,
    pub h1: u16,
    pub tls: u16,
}

pub async fn start_caddy(dir: &Path, docroot: &Path, cert: &Path, key: &Path) -> Result<Caddy, String> {
    let exe = which("caddy").ok_or("caddy is not installed")?;
    let (h1, tls) = (free_port(false)?, free_port(true)?);
    let conf = format!(
        "{{\n  admin off\n  auto_https off\n  servers {{\n    protocols h1 h2 h2c h3\n  }}\n}}\n\
         http://127.0.0.1:{h1} {{\n  root * {root}\n  file_server\n}}\n\
         https://127.0.0.1:{tls} {{\n  tls {cert} {key}\n  root * {root}\n  file_server\n}}\n",
        root = docroot.display(),
        cert = cert.display(),
        key = key.display(),
    );
    let file = dir.join("Caddyfile");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(&file, conf).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&file)
        .args(["--adapter", "caddyfile"])
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start caddy: {e}"))?;
    let proc = Proc { child };
    wait_listening(h1, "caddy").await?;
    wait_listening(tls, "caddy").await?;
    Ok(Caddy { proc, h1, tls })
}

/// The full path of a program on PATH (or in /usr/sbin, where Debian puts nginx).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
