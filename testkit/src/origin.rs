//! ldash as the kit sees it: where a running ldash listens and the certificate it serves
//! ([`Origin`], with clients for every protocol and the metrics scrape), and ldash as a child
//! process ([`OriginProcess`]: the `ldash` binary, or the benchmark's `ldash-bench serve`, which runs
//! the same library with the same options), found from the addresses it announces in its log.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::client::{reqwest_client, Client, H3Client};
use crate::metrics::{scrape, Scrape};
use crate::{process, tls, Proto};

/// Where a running ldash listens, and the certificate it serves.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The cleartext TCP listener (HTTP/1.1, h2c): ingest.
    pub http: SocketAddr,
    /// The TLS TCP listener (HTTP/1.1, HTTP/2).
    pub https: SocketAddr,
    /// The QUIC listener (HTTP/3), unless it is off.
    pub quic: Option<SocketAddr>,
    /// The metrics listener (`GET /metrics`), unless it is off.
    pub metrics: Option<SocketAddr>,
    pub cert: CertificateDer<'static>,
    /// The certificate's SPKI SHA-256 (Chromium's --ignore-certificate-errors-spki-list).
    pub spki: String,
}

impl Origin {
    /// The URL of `route` (e.g. "/ldash/download/a.txt") for a protocol.
    pub fn url(&self, proto: Proto, route: &str) -> String {
        if proto.is_tls() {
            format!("https://{}{route}", self.https)
        } else {
            format!("http://{}{route}", self.http)
        }
    }

    /// A TLS client configuration trusting this origin's certificate.
    pub fn tls_client(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
        tls::client_config(std::slice::from_ref(&self.cert), alpn)
    }

    /// A reqwest client that speaks exactly `proto` (a TCP flavour) to this origin.
    pub fn reqwest_client(&self, proto: Proto) -> Result<reqwest::Client, String> {
        reqwest_client(proto, self.tls_client(&[proto.alpn()])?)
    }

    /// A client that speaks exactly `proto` to this origin (a connection of its own for HTTP/3).
    pub async fn connect(&self, proto: Proto) -> Result<Client, String> {
        match proto {
            Proto::H3 => {
                let quic = self.quic.ok_or("HTTP/3 is off")?;
                Ok(Client::H3(H3Client::connect(quic, self.tls_client(&[b"h3"])?).await?))
            }
            tcp => Ok(Client::Tcp {
                client: self.reqwest_client(tcp)?,
                base: self.url(tcp, ""),
            }),
        }
    }

    /// One scrape of its metrics.
    pub async fn scrape(&self) -> Result<Scrape, String> {
        scrape(self.metrics.ok_or("ldash serves no metrics (--metrics off)")?).await
    }

    /// The value of one sample, scraped now.
    pub async fn metric(&self, sample: &str) -> Result<f64, String> {
        self.scrape()
            .await?
            .value(sample)
            .ok_or_else(|| format!("no metric {sample}"))
    }
}

/// `program` prepared to run ldash as a child process: log at info level without colours on its
/// standard output (piped: read it with [`follow_log`]), errors before logging starts on this
/// process's standard error, standard input held open (`ldash-bench serve` runs until it closes),
/// killed when dropped.
pub fn ldash_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// The lines of a child's log as they come, without colour sequences. The pipe is drained to its
/// end whether or not anyone still listens (a full pipe would block the child's logging).
pub fn follow_log(log: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (lines_tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(log).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = lines_tx.send(plain(&line));
        }
    });
    lines
}

/// Reads ldash's start-up announcement from its log, up to the certificate's line (the last one
/// with something a client needs), and the certificate it serves from `certs` (its --cert-dir).
/// Returns where it listens and every line read (the play page's among them).
pub async fn read_announcement(
    lines: &mut mpsc::UnboundedReceiver<String>,
    certs: &Path,
) -> Result<(Origin, Vec<String>), String> {
    let (mut http, mut https, mut quic, mut metrics) = (None, None, None, None);
    let mut seen = Vec::new();
    while let Some(line) = lines.recv().await {
        if line.contains("ingest (cleartext") {
            http = address_after(&line, "http://");
        } else if line.contains("players (TLS") {
            https = address_after(&line, "https://");
        } else if line.contains("players (HTTP/3") {
            quic = address_after(&line, "https://");
        } else if line.contains("metrics (Prometheus)") {
            metrics = address_after(&line, "http://");
        }
        let spki = line
            .split_once("--ignore-certificate-errors-spki-list): ")
            // The pin, then the log's fields (certificate=...).
            .and_then(|(_, pin)| pin.split_whitespace().next())
            .map(str::to_owned);
        seen.push(line);
        let Some(spki) = spki else { continue };
        let (Some(http), Some(https)) = (http, https) else {
            return Err(format!("ldash announced no listening addresses:\n{}", seen.join("\n")));
        };
        let cert = tls::certificates_in(&certs.join("cert.pem"))?
            .into_iter()
            .next()
            .ok_or("no certificate in ldash's cert.pem")?;
        let origin = Origin {
            http,
            https,
            quic,
            metrics,
            cert,
            spki,
        };
        return Ok((origin, seen));
    }
    Err(format!(
        "ldash stopped before announcing its addresses:\n{}",
        seen.join("\n")
    ))
}

/// `line` without ANSI colour sequences (in case the logger colours a pipe).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `host:port` right after `scheme` in a line such as `... http://127.0.0.1:41234/ldash/...`.
fn address_after(line: &str, scheme: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(scheme)? + scheme.len()..];
    rest.split('/').next()?.parse().ok()
}

/// What ldash logged after its announcement.
#[derive(Debug, Default)]
pub struct ServerLog {
    pub lines: usize,
    /// How requests ended, from the access log (`done`, `client gone`, an error).
    pub outcomes: BTreeMap<String, usize>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

impl ServerLog {
    /// Reads `lines` to their end (the child's exit).
    async fn collect(mut lines: mpsc::UnboundedReceiver<String>) -> ServerLog {
        let mut log = ServerLog::default();
        while let Some(line) = lines.recv().await {
            log.lines += 1;
            if let Some((_, outcome)) = line.split_once(" outcome=") {
                *log.outcomes.entry(outcome.trim_matches('"').to_owned()).or_default() += 1;
            }
            if line.contains(" ERROR ") {
                log.errors.push(line);
            } else if line.contains(" WARN ") {
                log.warnings.push(line);
            }
        }
        log
    }
}

/// ldash running as a child process on a root of its own, on ports it picked itself.
pub struct OriginProcess {
    origin: Origin,
    pub pid: u32,
    pub root: PathBuf,
    /// The certificate and key it serves (PEM), for peers that serve the same identity.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    child: tokio::process::Child,
    log: Option<tokio::task::JoinHandle<ServerLog>>,
}

impl std::ops::Deref for OriginProcess {
    type Target = Origin;
    fn deref(&self) -> &Origin {
        &self.origin
    }
}

impl OriginProcess {
    /// Runs `command` (from [`ldash_command`], with any leading arguments such as `serve`) with
    /// the root `dir`/www, certificates in `dir`/certs, every listener `options` does not name on
    /// 127.0.0.1 port 0 and then `options`, and waits (bounded) for its announcement.
    pub async fn start(
        mut command: tokio::process::Command,
        dir: &Path,
        options: &[&str],
    ) -> Result<OriginProcess, String> {
        let root = dir.join("www");
        let certs = dir.join("certs");
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        command.arg(&root);
        // Port 0 for every listener `options` does not place (a restart on the same ports does).
        for listener in ["--http", "--https", "--metrics"] {
            if !options.contains(&listener) {
                command.args([listener, "127.0.0.1:0"]);
            }
        }
        command.arg("--cert-dir").arg(&certs).args(options);
        let mut child = command.spawn().map_err(|e| format!("cannot start ldash: {e}"))?;
        let pid = child.id().ok_or("ldash exited at once")?;
        let mut lines = follow_log(child.stdout.take().ok_or("ldash's log is not piped")?);
        let (origin, _) = tokio::time::timeout(Duration::from_secs(30), read_announcement(&mut lines, &certs))
            .await
            .map_err(|_| "ldash did not announce its addresses within 30 s")??;
        Ok(OriginProcess {
            origin,
            pid,
            root,
            cert_pem: certs.join("cert.pem"),
            key_pem: certs.join("key.pem"),
            child,
            log: Some(tokio::spawn(ServerLog::collect(lines))),
        })
    }

    /// CPU time and memory of the server process.
    pub fn usage(&self) -> process::Usage {
        process::usage(self.pid)
    }

    /// SIGKILL (an origin that dies: nothing is drained or flushed), then waits (bounded) for it
    /// to be gone.
    pub async fn kill(&mut self) -> Result<(), String> {
        if !process::signal(self.pid, "KILL") {
            return Err("SIGKILL did not reach ldash".into());
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .map_err(|_| "ldash was not gone within 10 s of SIGKILL")?
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// SIGTERM, then waits (bounded) for the graceful shutdown; its exit status and what it logged.
    pub async fn stop(&mut self) -> Result<(ExitStatus, ServerLog), String> {
        if !process::signal(self.pid, "TERM") {
            return Err("SIGTERM did not reach ldash".into());
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| "ldash did not stop within 30 s of SIGTERM")?
            .map_err(|e| e.to_string())?;
        let log = self.log.take().ok_or("ldash was stopped before")?;
        let log = tokio::time::timeout(Duration::from_secs(10), log)
            .await
            .map_err(|_| "ldash's log did not close when it exited")?
            .map_err(|e| e.to_string())?;
        Ok((status, log))
    }
}
