//! Shaped network paths for the tests and the benchmark: a player far from the origin, on this
//! machine.
//!
//! These kernels have no `sch_netem` (and load no modules), so the shaping is done in user space.
//! The test process (and ldash, and ffmpeg on loopback) stays in the root network namespace;
//! [`NetPath::open`] makes a namespace of its own for the player and joins the two with a pair of
//! TUN devices that this process holds: one in the root namespace with the server's address, one
//! moved into the player's namespace with the player's, both /30s of the RFC 2544 benchmarking
//! range (198.18.0.0/15: never routed, only ever inside this machine). A relay (two threads per
//! direction: a reader that decides, a writer that delivers on time) copies every packet between
//! the two devices, dropping and delaying it as the [`Profile`] says ([`Shaper`] holds that rule,
//! pure and seeded, so a run can be reproduced). The namespace holds nothing but the player, so
//! every packet is the player's traffic.
//!
//! The player reaches ldash at [`NetPath::server_addr`] (ldash listens there, or on 0.0.0.0);
//! [`NetPath::wrap`] and [`NetPath::exec_prefix`] run a program (node with Chromium, curl,
//! python) inside the player's namespace. Dropping the path stops the relay, closes the devices
//! (which deletes them) and deletes the namespace; a namespace left by a killed earlier run is
//! deleted by the next [`NetPath::open`].
//!
//! It needs root and /dev/net/tun: without them [`NetPath::open`] answers
//! [`OpenError::Unavailable`], which a test turns into a skip ([`NetPath::require`]).

use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a path does to each packet, per direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The name it is known by ([`Profile::named`]).
    pub name: String,
    /// Round-trip time added: half of it each way.
    pub rtt: Duration,
    /// Probability (0 to 1) that a packet is lost, each way on its own.
    pub loss: f64,
    /// Each packet's one-way delay varies uniformly within ± this (order is kept).
    pub jitter: Duration,
    /// Link rate in bits per second each way (None: as fast as the relay goes).
    pub rate: Option<u64>,
    /// Seed of the loss and jitter draws.
    pub seed: u64,
}

impl Profile {
    /// The named profiles, as the issue lists them.
    pub const NAMES: [&'static str; 4] = ["clean", "rtt50-loss1", "rtt100-loss2-jitter10", "mobile"];

    /// `clean` (nothing added), `rtt50-loss1` (50 ms RTT, 1% loss), `rtt100-loss2-jitter10`
    /// (100 ms RTT, 2% loss, ± 10 ms jitter) or `mobile` (60 ms RTT, 5 Mbit/s, 0.5% loss).
    pub fn named(name: &str) -> Option<Profile> {
        let ms = Duration::from_millis;
        let (rtt, loss, jitter, rate) = match name {
            "clean" => (ms(0), 0.0, ms(0), None),
            "rtt50-loss1" => (ms(50), 0.01, ms(0), None),
            "rtt100-loss2-jitter10" => (ms(100), 0.02, ms(10), None),
            "mobile" => (ms(60), 0.005, ms(0), Some(5_000_000)),
            _ => return None,
        };
        Some(Profile {
            name: name.to_owned(),
            rtt,
            loss,
            jitter,
            rate,
            seed: 0x1d_a5_4e_7a,
        })
    }

    /// One line for a report: "rtt100-loss2-jitter10 (100 ms RTT, 2% loss, ± 10 ms jitter)".
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} ms RTT", self.rtt.as_millis())];
        if self.loss > 0.0 {
            parts.push(format!("{}% loss each way", self.loss * 100.0));
        }
        if !self.jitter.is_zero() {
            parts.push(format!("± {} ms jitter", self.jitter.as_millis()));
        }
        if let Some(rate) = self.rate {
            parts.push(format!("{} Mbit/s", rate as f64 / 1e6));
        }
        format!("{} ({})", self.name, parts.join(", "))
    }
}

/// What the shaper decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered at this instant.
    Deliver(Instant),
    /// Lost (the profile's random loss).
    Lost,
    /// Dropped at the tail of a full queue (the rate limit's buffer).
    Overflow,
}

/// The rule of one direction of a path, without I/O: packets and `now` in, verdicts out.
#[derive(Debug)]
pub struct Shaper {
    delay: Duration,
    jitter: Duration,
    loss: f64,
    rate: Option<u64>,
    /// The most the rate limit's queue holds, as time to drain it.
    queue: Duration,
    rng: u64,
    /// When the link has sent everything queued so far.
    link_free: Option<Instant>,
    /// When the previous packet is delivered: no packet overtakes another.
    last_delivery: Option<Instant>,
}

impl Shaper {
    /// One direction of `profile`; `stream` tells the directions' random draws apart.
    pub fn new(profile: &Profile, stream: u64) -> Shaper {
        Shaper {
            delay: profile.rtt / 2,
            jitter: profile.jitter,
            loss: profile.loss,
            rate: profile.rate.filter(|r| *r > 0),
            // About one bandwidth-delay product, and never under 100 ms worth.
            queue: profile.rtt.max(Duration::from_millis(100)),
            rng: profile.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d,
            link_free: None,
            last_delivery: None,
        }
    }

    /// The fate of a packet of `len` bytes that arrives at `now`.
    pub fn decide(&mut self, now: Instant, len: usize) -> Verdict {
        if self.loss > 0.0 && self.uniform() < self.loss {
            return Verdict::Lost;
        }
        let departs = match self.rate {
            Some(rate) => {
                let start = self.link_free.map_or(now, |free| free.max(now));
                if start - now > self.queue {
                    return Verdict::Overflow;
                }
                let end = start + Duration::from_nanos(len as u64 * 8 * 1_000_000_000 / rate);
                self.link_free = Some(end);
                end
            }
            None => now,
        };
        let mut delay = self.delay;
        if !self.jitter.is_zero() {
            let offset = (self.uniform() * 2.0 - 1.0) * self.jitter.as_secs_f64();
            delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
        }
        let at = self
            .last_delivery
            .map_or(departs + delay, |last| last.max(departs + delay));
        self.last_delivery = Some(at);
        Verdict::Deliver(at)
    }

    /// A uniform draw in [0, 1) (SplitMix64: small, seeded, good enough for loss and jitter).
    fn uniform(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counters of one direction.
#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    overflowed: AtomicU64,
}

/// What one direction carried so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Direction {
    /// Packets that arrived at the relay.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets lost on purpose (the profile's loss).
    pub lost: u64,
    /// Packets dropped at the tail of the rate limit's queue.
    pub overflowed: u64,
}

impl Direction {
    /// Packets dropped, for either reason.
    pub fn dropped(&self) -> u64 {
        self.lost + self.overflowed
    }

    /// What this direction carried since `before`.
    pub fn since(&self, before: &Direction) -> Direction {
        Direction {
            packets: self.packets - before.packets,
            bytes: self.bytes - before.bytes,
            lost: self.lost - before.lost,
            overflowed: self.overflowed - before.overflowed,
        }
    }
}

/// What a path carried so far, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Server to player (responses, media).
    pub to_player: Direction,
    /// Player to server (requests, ACKs).
    pub to_server: Direction,
}

impl Traffic {
    /// What the path carried since `before`.
    pub fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            to_player: self.to_player.since(&before.to_player),
            to_server: self.to_server.since(&before.to_server),
        }
    }
}

impl std::fmt::Display for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |d: &Direction| format!("{} packets, {} dropped", d.packets, d.dropped());
        write!(
            f,
            "to the player {}; to the server {}",
            d(&self.to_player),
            d(&self.to_server)
        )
    }
}

/// Why a path could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The machine cannot have one (not root, no /dev/net/tun, no `ip`): a test skips.
    Unavailable(String),
    /// Setting it up failed.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Unavailable(why) => write!(f, "no shaped network path on this machine: {why}"),
            OpenError::Failed(why) => write!(f, "the shaped network path failed: {why}"),
        }
    }
}

/// The prefix of every namespace a path makes: `ldash-p{pid}-{n}`.
const PREFIX: &str = "ldash-p";

/// Paths opened by this process (their names' `n`).
static OPENED: AtomicUsize = AtomicUsize::new(0);

/// One set-up at a time in this process (the address scan and its assignment); other processes
/// are kept apart by a lock file as well.
static SETTING_UP: Mutex<()> = Mutex::new(());

/// A shaped path between the root namespace (ldash) and a namespace of its own (the player).
pub struct NetPath {
    namespace: String,
    devices: [String; 2],
    server: Ipv4Addr,
    player: Ipv4Addr,
    profile: Profile,
    counters: Arc<[Counters; 2]>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl NetPath {
    /// Makes the namespace and the two devices, and starts the relay shaping as `profile` says.
    pub fn open(profile: Profile) -> Result<NetPath, OpenError> {
        available()?;
        let setting_up = SETTING_UP.lock().unwrap_or_else(|e| e.into_inner());
        let _lock =
            FileLock::take("/run/lock/ldash-netpath.lock").or_else(|_| FileLock::take("/tmp/ldash-netpath.lock"));
        remove_stale();
        let pid = std::process::id();
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("{PREFIX}{pid}-{n}");
        // Interface names have at most 15 characters.
        let devices = [format!("ld{pid}s{n}"), format!("ld{pid}c{n}")];
        let (server, player) = free_subnet()?;
        let server_tun = tun(&devices[0]).map_err(|e| OpenError::Failed(format!("TUN {}: {e}", devices[0])))?;
        let player_tun = tun(&devices[1]).map_err(|e| OpenError::Failed(format!("TUN {}: {e}", devices[1])))?;
        let mut path = NetPath {
            namespace,
            devices,
            server,
            player,
            profile,
            counters: Arc::new([Counters::default(), Counters::default()]),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        // From here on a failure drops `path`, which deletes what was made.
        path.configure()?;
        drop(setting_up);
        let server_tun = Arc::new(server_tun);
        let player_tun = Arc::new(player_tun);
        path.relay(0, server_tun.clone(), player_tun.clone())?;
        path.relay(1, player_tun, server_tun)?;
        Ok(path)
    }

    /// [`NetPath::open`] for a test: None (the test skips, with a `SKIPPED` line) when the
    /// machine cannot have a path, unless `LDASH_REQUIRE_TOOLS=1`, where it fails; fails the
    /// test when setting it up fails.
    pub fn require(profile: Profile) -> Option<NetPath> {
        match NetPath::open(profile) {
            Ok(path) => Some(path),
            Err(OpenError::Unavailable(why)) => {
                crate::tools::missing(
                    &format!("a shaped network path ({why})"),
                    "run as root on a machine with /dev/net/tun and iproute2",
                );
                None
            }
            Err(err) => panic!("{err}"),
        }
    }

    /// Where the player reaches the root namespace (ldash): 198.18.0.1 for the first path open.
    pub fn server_addr(&self) -> Ipv4Addr {
        self.server
    }

    /// The player's address in its namespace (198.18.0.2 for the first path open).
    pub fn player_addr(&self) -> Ipv4Addr {
        self.player
    }

    /// The player's namespace (`ldash-p{pid}-{n}`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The TUN devices: the root namespace's, then the player's.
    pub fn devices(&self) -> &[String; 2] {
        &self.devices
    }

    /// The profile the relay applies.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// What runs a program inside the player's namespace: `ip netns exec NS`.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespace].map(str::to_owned).to_vec()
    }

    /// `command` run inside the player's namespace (its program, arguments, environment changes
    /// and folder, behind `ip netns exec NS`).
    pub fn wrap(&self, command: &Command) -> Command {
        let prefix = self.exec_prefix();
        let mut wrapped = Command::new(&prefix[0]);
        wrapped
            .args(&prefix[1..])
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    /// What the path carried so far.
    pub fn traffic(&self) -> Traffic {
        let read = |c: &Counters| Direction {
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
        };
        Traffic {
            to_player: read(&self.counters[0]),
            to_server: read(&self.counters[1]),
        }
    }

    /// Addresses, links up, the player's device moved into the player's namespace.
    fn configure(&self) -> Result<(), OpenError> {
        let ns = self.namespace.as_str();
        let [server_dev, player_dev] = &self.devices;
        let server = format!("{}/30", self.server);
        let player = format!("{}/30", self.player);
        ip(&["netns", "add", ns])?;
        // No IPv6 on the devices: nothing but the player's own IPv4 traffic crosses the relay.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{server_dev}/disable_ipv6"), "1");
        ip(&["link", "set", player_dev, "netns", ns])?;
        ip(&["addr", "add", &server, "dev", server_dev])?;
        ip(&["link", "set", server_dev, "mtu", "1500", "up"])?;
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{player_dev}.disable_ipv6=1"),
            ],
        );
        ip(&["-n", ns, "addr", "add", &player, "dev", player_dev])?;
        ip(&["-n", ns, "link", "set", player_dev, "mtu", "1500", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// One direction (`which`: 0 to the player, 1 to the server): a reader that shapes what
    /// `from` gives and a writer that hands it to `to` on time.
    fn relay(&mut self, which: usize, from: Arc<File>, to: Arc<File>) -> Result<(), OpenError> {
        let (queue, delivered) = mpsc::channel::<(Instant, Vec<u8>)>();
        let mut shaper = Shaper::new(&self.profile, which as u64);
        let (stop, counters) = (self.stop.clone(), self.counters.clone());
        let name = format!("netpath-{}-{which}", self.namespace);
        let reader = std::thread::Builder::new()
            .name(format!("{name}-in"))
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                let counters = &counters[which];
                while !stop.load(Ordering::Relaxed) {
                    if !readable(&from, 50) {
                        continue;
                    }
                    let len = match (&*from).read(&mut buf) {
                        Ok(len) if len > 0 => len,
                        _ => continue,
                    };
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                    match shaper.decide(Instant::now(), len) {
                        Verdict::Deliver(at) => {
                            if queue.send((at, buf[..len].to_vec())).is_err() {
                                return;
                            }
                        }
                        Verdict::Lost => {
                            counters.lost.fetch_add(1, Ordering::Relaxed);
                        }
                        Verdict::Overflow => {
                            counters.overflowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
            .map_err(|e| OpenError::Failed(format!("relay thread: {e}")))?;
        self.threads.push(reader);
        let stop = self.stop.clone();
        let writer = std::thread::Builder::new()
            .name(format!("{name}-out"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((at, packet)) = delivered.recv_timeout(Duration::from_millis(50)) else {
                        continue;
                    };
                    let wait = at.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    // A packet the kernel refuses is lost, as on a wire.
                    let _ = (&*to).write(&packet);
                }
            })
            .map_err(|e| OpenError::Failed(format!("relay thread: {e}")))?;
        self.threads.push(writer);
        Ok(())
    }
}

impl Drop for NetPath {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The threads held the devices' files: both are closed now, which deletes the devices.
        let _ = run("ip", &["netns", "delete", &self.namespace]);
    }
}

impl std::fmt::Debug for NetPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPath")
            .field("namespace", &self.namespace)
            .field("server", &self.server)
            .field("player", &self.player)
            .field("profile", &self.profile)
            .finish()
    }
}

/// Whether this machine can have a path at all.
fn available() -> Result<(), OpenError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(OpenError::Unavailable("not root".into()));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(OpenError::Unavailable("no /dev/net/tun".into()));
    }
    if crate::tools::which("ip").is_none() {
        return Err(OpenError::Unavailable("no `ip` (iproute2)".into()));
    }
    Ok(())
}

/// Deletes the namespaces of earlier runs whose process is gone.
fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = run("ip", &["netns", "delete", name]);
        }
    }
}

/// The first /30 of 198.18.0.0/15 that no address of the root namespace is in: (server, player).
fn free_subnet() -> Result<(Ipv4Addr, Ipv4Addr), OpenError> {
    let taken = run("ip", &["-o", "-4", "addr", "show"]).map_err(OpenError::Failed)?;
    let taken: Vec<u32> = taken
        .split_whitespace()
        .filter_map(|word| word.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .collect();
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    (0..(1u32 << 15))
        .map(|i| base + 4 * i)
        .find(|net| !taken.iter().any(|a| a & !3 == *net))
        .map(|net| (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2)))
        .ok_or_else(|| OpenError::Failed("no free /30 in 198.18.0.0/15".into()))
}

/// A TUN device named `name` (IFF_TUN | IFF_NO_PI: whole IP packets, no header), open.
fn tun(name: &str) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq, which outlives the call; the descriptor is open.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Whether `file` has a packet to read within `ms` milliseconds.
fn readable(file: &File, ms: i32) -> bool {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, alive for the call.
    let ready = unsafe { libc::poll(&mut poll, 1, ms) };
    ready > 0 && poll.revents & libc::POLLIN != 0
}

/// `ip ARGS`, failing with what it said.
fn ip(args: &[&str]) -> Result<(), OpenError> {
    run("ip", args).map(drop).map_err(OpenError::Failed)
}

/// Runs `program args`; its standard output, or why it failed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An exclusive flock on a file, released when dropped (closing the file).
struct FileLock {
    _file: File,
}

impl FileLock {
    fn take(path: &str) -> std::io::Result<FileLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str) -> Profile {
        Profile::named(name).expect("a named profile")
    }

    #[test]
    fn every_named_profile_is_known() {
        for name in Profile::NAMES {
            assert_eq!(profile(name).name, name);
        }
        assert_eq!(profile("mobile").rate, Some(5_000_000));
        assert!(Profile::named("moon").is_none());
    }

    #[test]
    fn jitter_never_reorders_packets() {
        let mut shaper = Shaper::new(&profile("rtt100-loss2-jitter10"), 0);
        let start = Instant::now();
        let mut last = start;
        for i in 0..10_000u64 {
            let now = start + Duration::from_micros(100 * i);
            if let Verdict::Deliver(at) = shaper.decide(now, 1200) {
                assert!(at >= last, "packet {i} overtook the one before it");
                assert!(
                    at >= now + Duration::from_millis(40),
                    "packet {i} arrived before 50 ms - 10 ms"
                );
                assert!(
                    at <= now + Duration::from_millis(100),
                    "packet {i} waited far beyond 60 ms"
                );
                last = at;
            }
        }
    }

    #[test]
    fn loss_is_as_set_and_reproducible() {
        let run = || {
            let mut shaper = Shaper::new(&profile("rtt100-loss2-jitter10"), 1);
            let now = Instant::now();
            (0..100_000)
                .map(|_| shaper.decide(now, 100) == Verdict::Lost)
                .collect::<Vec<_>>()
        };
        let first = run();
        let lost = first.iter().filter(|l| **l).count();
        assert!((1_800..2_200).contains(&lost), "{lost} of 100000 lost at 2%");
        assert_eq!(first, run(), "the same seed loses the same packets");
    }

    #[test]
    fn the_rate_limit_serializes_and_drops_the_tail_beyond_its_queue() {
        let mobile = Profile {
            loss: 0.0,
            ..profile("mobile")
        };
        let mut shaper = Shaper::new(&mobile, 0);
        let now = Instant::now();
        // 1500 bytes at 5 Mbit/s: 2.4 ms each; 100 ms of queue holds about 42 packets.
        let verdicts: Vec<_> = (0..100).map(|_| shaper.decide(now, 1500)).collect();
        let delivered = verdicts.iter().filter(|v| matches!(v, Verdict::Deliver(_))).count();
        assert!((40..=44).contains(&delivered), "{delivered} packets queued");
        assert_eq!(
            verdicts[0],
            Verdict::Deliver(now + Duration::from_micros(2400 + 30_000))
        );
        assert_eq!(verdicts[99], Verdict::Overflow);
    }
}
