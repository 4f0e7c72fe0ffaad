//! Peer servers (nginx, Varnish, caddy) started for a test or a benchmark item: on free loopback
//! ports picked just before the start (another start retries when a port was taken in between),
//! ready when their own output says so (no polling), and stopped when dropped: SIGTERM to the
//! master, which stops the workers it forked (SIGKILL would orphan them), then SIGKILL to whatever
//! of the tree is left after a bound.

use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::process;
use crate::tools::free_port;

/// How to recognise what a program says.
#[derive(Clone, Copy)]
pub struct Signs {
    /// The program's name, for messages.
    pub what: &'static str,
    /// A line that says it is serving (it has bound its ports by then).
    pub ready: fn(&str) -> bool,
    /// A line that says it failed to start.
    pub failed: fn(&str) -> bool,
    /// Lines worth showing after it stopped (errors it reported while running).
    pub complaint: fn(&str) -> bool,
    /// How long it may take to become ready.
    pub bound: Duration,
}

/// nginx with `error_log stderr notice`: ready when it starts its workers (it has bound its ports
/// by then).
pub const NGINX: Signs = Signs {
    what: "nginx",
    ready: |l| l.contains("start worker process"),
    failed: |l| l.contains("[emerg]"),
    complaint: |l| l.contains("[error]") || l.contains("[crit]") || l.contains("[alert]"),
    bound: Duration::from_secs(20),
};

/// varnishd -F: ready when the manager reports that its child (the cache process, which accepts on
/// the socket the manager bound) started.
pub const VARNISH: Signs = Signs {
    what: "varnishd",
    ready: |l| l.contains("Child starts"),
    failed: |l| l.starts_with("Error"),
    complaint: |l| l.starts_with("Error") && !l.contains("Manager got SIGTERM"),
    bound: Duration::from_secs(20),
};

/// caddy run: ready when it serves its configuration.
pub const CADDY: Signs = Signs {
    what: "caddy",
    ready: |l| l.contains("serving initial configuration"),
    failed: |l| l.starts_with("Error"),
    complaint: |l| l.contains("\"level\":\"error\""),
    bound: Duration::from_secs(20),
};

/// A running peer server.
pub struct Daemon {
    child: std::process::Child,
    /// The ports it was started on, as the command was given them.
    pub ports: Vec<u16>,
    output: Arc<Mutex<Vec<String>>>,
    /// Disconnected once the program (and any process it forked that shares its output) has closed
    /// its output, i.e. exited.
    exited: std::sync::mpsc::Receiver<()>,
    signs: Signs,
}

/// Starts the program `command` builds for `ports` free loopback ports (`udp` when it also needs the
/// UDP twin of the last one, for QUIC), with its standard output and error captured; retries with
/// other ports (5 tries) when a port was taken in between.
pub async fn start(
    signs: Signs,
    ports: usize,
    udp: bool,
    mut command: impl FnMut(&[u16]) -> Result<std::process::Command, String>,
) -> Result<Daemon, String> {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let picked = (0..ports)
            .map(|i| free_port(udp && i + 1 == ports))
            .collect::<Result<Vec<u16>, String>>()?;
        let mut child = command(&picked)?
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", signs.what))?;
        let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
        let (exit_tx, exited) = std::sync::mpsc::channel::<()>();
        let output = Arc::new(Mutex::new(Vec::new()));
        let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as _),
            child.stderr.take().map(|p| Box::new(p) as _),
        ];
        for pipe in pipes.into_iter().flatten() {
            let (kept, lines_tx, exit_tx) = (output.clone(), lines_tx.clone(), exit_tx.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    kept.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                    let _ = lines_tx.send(line);
                }
                drop(exit_tx);
            });
        }
        drop((lines_tx, exit_tx));
        let outcome = tokio::time::timeout(signs.bound, async {
            while let Some(line) = lines.recv().await {
                if (signs.ready)(&line) {
                    return Ok(());
                }
                if (signs.failed)(&line) {
                    return Err(line);
                }
            }
            Err(format!("{} exited", signs.what))
        })
        .await
        .unwrap_or_else(|_| Err(format!("{} was not ready within {:?}", signs.what, signs.bound)));
        let mut daemon = Daemon {
            child,
            ports: picked,
            output,
            exited,
            signs,
        };
        let Err(line) = outcome else {
            return Ok(daemon);
        };
        // Its output goes into the error: not reported again when it is dropped.
        let output = daemon.output().join("\n");
        daemon.signs.complaint = |_| false;
        drop(daemon);
        if !line.to_ascii_lowercase().contains("address already in use") {
            return Err(format!("{} failed: {line}\n{output}", signs.what));
        }
        failures.push(line);
    }
    Err(format!("{} found no free port in 5 tries: {failures:?}", signs.what))
}

/// nginx with `dir` as its prefix (its logs/ and temp/ made) on the configuration `conf` builds
/// for `ports` free ports (written to `dir`/nginx.conf before each try), in the foreground, logging
/// to its standard error. `user root`: the workers must write a cache under a root-owned temporary
/// folder (nginx ignores it, with a warning, when not run as root).
pub async fn start_nginx(
    nginx: &Path,
    dir: &Path,
    ports: usize,
    conf: impl Fn(&[u16]) -> String,
) -> Result<Daemon, String> {
    for sub in ["logs", "temp"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("nginx folders: {e}"))?;
    }
    let conf_path = dir.join("nginx.conf");
    let prefix = format!("{}/", dir.display());
    let globals = format!("daemon off; master_process on; pid {prefix}nginx.pid; error_log stderr notice; user root;");
    start(NGINX, ports, false, |ports| {
        std::fs::write(&conf_path, conf(ports)).map_err(|e| format!("nginx.conf: {e}"))?;
        let mut command = std::process::Command::new(nginx);
        command
            .args(["-p", &prefix, "-c"])
            .arg(&conf_path)
            .args(["-g", &globals]);
        Ok(command)
    })
    .await
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first port it was started on.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Everything it printed so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// CPU time and memory of the program and its workers.
    pub fn usage(&self) -> process::Usage {
        process::usage(self.pid())
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        process::signal(self.pid(), "TERM");
        // Nothing is ever sent: this returns (disconnected) once the program closed its output.
        let _ = self.exited.recv_timeout(Duration::from_secs(10));
        if matches!(self.child.try_wait(), Ok(None)) {
            process::kill_tree(self.pid());
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let complaints: Vec<String> = self
            .output()
            .into_iter()
            .filter(|l| (self.signs.complaint)(l))
            .collect();
        if !complaints.is_empty() {
            eprintln!("{} reported:\n{}", self.signs.what, complaints.join("\n"));
        }
    }
}
