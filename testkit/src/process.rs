//! What a process costs, read from /proc (a server's CPU time and memory, summed over the workers it
//! forked), and signals to a process or its whole tree.

/// CPU time and memory of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds, summed over the tree.
    pub cpu: f64,
    /// Resident memory in bytes, summed over the tree.
    pub rss: u64,
}

/// USER_HZ, the unit of /proc's CPU times: 100 on every Linux architecture this runs on.
const CLOCK_TICKS: f64 = 100.0;

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

/// The fields of /proc/PID/stat after the command name (which is in parentheses and may contain
/// spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn one(pid: u32) -> Option<Usage> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(Usage {
        cpu: ticks / CLOCK_TICKS,
        rss: rss_kib(pid) * 1024,
    })
}

/// The resident memory of one process (VmRSS), in KiB; 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// How many file descriptors one process has open; 0 when it cannot be read.
pub fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// `root` and every process descended from it.
pub fn tree(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?.get(1)?.parse().ok()?)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    all
}

/// Sends `signal` ("TERM", "KILL") to `pid`; whether it was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGKILL to `pid` and everything it forked, the parent first (a live master would replace a
/// worker that dies).
pub fn kill_tree(pid: u32) {
    for p in tree(pid) {
        signal(p, "KILL");
    }
}
