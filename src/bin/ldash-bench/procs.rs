//! The servers under test, each in a process of its own so that its CPU time and memory are its own:
//! ldash (this binary re-run as `ldash-bench serve`, which runs the ldash library exactly as the
//! `ldash` binary does, with logging off), nginx and caddy from Debian's packages, all started by
//! the test kit's launchers (testkit::origin, testkit::daemon).

use std::path::Path;

use testkit::daemon::{self, Daemon};
use testkit::origin::{ldash_command, OriginProcess};
use testkit::tools::which;

/// Starts ldash in a child process with a fresh root under `dir` and extra options `args`. Every
/// client of the benchmark comes from 127.0.0.1 (up to 1600 readers at once), so the per-address
/// connection limits are off and the totals above what an item opens, unless `args` set them.
pub async fn start_ldash(dir: &Path, args: &[&str]) -> Result<OriginProcess, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = ldash_command(exe);
    command.arg("serve");
    for (option, value) in [
        ("--http-max-connections-per-ip", "0"),
        ("--https-max-connections-per-ip", "0"),
        ("--http-max-connections", "16384"),
        ("--https-max-connections", "16384"),
    ] {
        if !args.contains(&option) {
            command.args([option, value]);
        }
    }
    OriginProcess::start(command, dir, args).await
}

/// `ldash-bench serve ROOT [OPTIONS]`: the server side, run in its own process by [`start_ldash`].
/// Announces where it listens on its standard output as the `ldash` binary does (the kit reads
/// that), then serves until its standard input closes (so it never outlives the benchmark).
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
    // The announcement alone on standard output, whatever the log is doing.
    let stdout = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .finish();
    tracing::subscriber::with_default(stdout, || server.announce());
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

/// nginx serving `docroot` over HTTP/1.1 on its first port and HTTP/2 (prior knowledge) on its
/// second.
pub async fn start_nginx(dir: &Path, docroot: &Path) -> Result<Daemon, String> {
    let exe = which("nginx").ok_or("nginx is not installed")?;
    daemon::start_nginx(&exe, dir, 2, |ports| {
        // Tuned as an operator would for static files: a worker per core, sendfile, no access log.
        format!(
            "worker_processes 2;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
             keepalive_requests 1000000;\n  types {{ video/iso.segment m4s; }}\n\
             server {{ listen 127.0.0.1:{h1}; root {root}; }}\n\
             server {{ listen 127.0.0.1:{h2c} http2; root {root}; }}\n}}\n",
            root = docroot.display(),
            h1 = ports[0],
            h2c = ports[1],
        )
    })
    .await
}

/// caddy serving `docroot` over HTTP/1.1 and h2c on its first port (cleartext), and HTTP/3 (and TLS
/// TCP) on its second with the given certificate.
pub async fn start_caddy(dir: &Path, docroot: &Path, cert: &Path, key: &Path) -> Result<Daemon, String> {
    let exe = which("caddy").ok_or("caddy is not installed")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let file = dir.join("Caddyfile");
    daemon::start(daemon::CADDY, 2, true, |ports| {
        let conf = format!(
            "{{\n  admin off\n  auto_https off\n  servers {{\n    protocols h1 h2 h2c h3\n  }}\n}}\n\
             http://127.0.0.1:{h1} {{\n  root * {root}\n  file_server\n}}\n\
             https://127.0.0.1:{tls} {{\n  tls {cert} {key}\n  root * {root}\n  file_server\n}}\n",
            root = docroot.display(),
            cert = cert.display(),
            key = key.display(),
            h1 = ports[0],
            tls = ports[1],
        );
        std::fs::write(&file, conf).map_err(|e| e.to_string())?;
        let mut command = std::process::Command::new(&exe);
        command
            .arg("run")
            .arg("--config")
            .arg(&file)
            .args(["--adapter", "caddyfile"])
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"));
        Ok(command)
    })
    .await
}
