//! The test kit's shaped network paths (testkit::netpath) do what their profiles say, through real
//! sockets: a listener in the root namespace on the path's server address, a client (python3) run
//! in the player's namespace. TCP connect time is one round trip, UDP loses about the share set,
//! the clean path adds nothing, the mobile path's rate holds, and nothing is left after Drop.
//! They need root and /dev/net/tun (skipped without, unless LDASH_REQUIRE_TOOLS=1).

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::netpath::{NetPath, Profile};
use testkit::tools::require_tool;

/// The path for `name` and python3; None when the test skips.
fn path_and_python(name: &str) -> Option<(NetPath, std::path::PathBuf)> {
    let python = require_tool("python3")?;
    let profile = Profile::named(name).expect("a named profile");
    Some((NetPath::require(profile)?, python))
}

/// Runs python `code` (with `args`) inside the path's player namespace; its standard output.
fn python_in(path: &NetPath, python: &std::path::Path, code: &str, args: &[String]) -> String {
    let mut command = Command::new(python);
    command.arg("-c").arg(code).args(args);
    let output = path
        .wrap(&command)
        .output()
        .unwrap_or_else(|e| panic!("python3 in {}: {e}", path.namespace()));
    assert!(
        output.status.success(),
        "python3 in {} failed: {}",
        path.namespace(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Milliseconds of each of `count` TCP connects from the player's namespace to a listener on the
/// server's address, in order.
fn connect_times(path: &NetPath, python: &std::path::Path, count: usize) -> Vec<f64> {
    let listener = TcpListener::bind((path.server_addr(), 0)).expect("a listener on the server's address");
    let port = listener.local_addr().expect("its address").port();
    // The kernel completes the handshakes; accepting only keeps the backlog free.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let code = "import socket, sys, time\n\
                host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n\
                for _ in range(n):\n\
                \x20   s = socket.socket()\n\
                \x20   t = time.monotonic()\n\
                \x20   s.connect((host, port))\n\
                \x20   print((time.monotonic() - t) * 1000)\n\
                \x20   s.close()\n\
                \x20   time.sleep(0.02)\n";
    let out = python_in(
        path,
        python,
        code,
        &[path.server_addr().to_string(), port.to_string(), count.to_string()],
    );
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[test]
fn tcp_connect_takes_one_round_trip_on_the_100ms_path() {
    let Some((path, python)) = path_and_python("rtt100-loss2-jitter10") else {
        return;
    };
    // The median of 9: a lost SYN (2% each way) costs one connect a second, not the figure.
    let times = connect_times(&path, &python, 9);
    assert_eq!(times.len(), 9, "every connect reported a time");
    let connect = median(&times);
    println!(
        "NETPATH {}: TCP connect {times:.1?} ms, median {connect:.1} ms",
        path.profile().describe()
    );
    assert!(
        (90.0..=250.0).contains(&connect),
        "TCP connect over a 100 ms RTT path took {connect:.1} ms (median of {times:.1?})"
    );
}

#[test]
fn clean_path_adds_no_delay() {
    let Some((path, python)) = path_and_python("clean") else {
        return;
    };
    let times = connect_times(&path, &python, 9);
    let connect = median(&times);
    println!("NETPATH clean: TCP connect {times:.2?} ms, median {connect:.2} ms");
    // The relay's own cost: two thread hand-offs per packet each way on a shared machine.
    assert!(connect < 10.0, "TCP connect over the clean path took {connect:.2} ms");
}

#[test]
fn udp_loses_about_the_share_set_each_way() {
    let Some((path, python)) = path_and_python("rtt100-loss2-jitter10") else {
        return;
    };
    let socket = UdpSocket::bind((path.server_addr(), 0)).expect("a UDP socket on the server's address");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("a read timeout");
    let port = socket.local_addr().expect("its address").port();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let echo = {
        let (received, done) = (received.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    received.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        })
    };
    let before = path.traffic();
    // 2,000 datagrams 0.5 ms apart, then 1 s for the last echoes to come back.
    let code = "import socket, sys, time\n\
                host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n\
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                s.setblocking(False)\n\
                got = set()\n\
                def drain():\n\
                \x20   while True:\n\
                \x20       try:\n\
                \x20           got.add(s.recv(2048))\n\
                \x20       except BlockingIOError:\n\
                \x20           return\n\
                for i in range(n):\n\
                \x20   s.sendto(b'%08d' % i + b'.' * 100, (host, port))\n\
                \x20   drain()\n\
                \x20   time.sleep(0.0005)\n\
                end = time.monotonic() + 1.0\n\
                while time.monotonic() < end:\n\
                \x20   drain()\n\
                \x20   time.sleep(0.005)\n\
                print(len(got))\n";
    let sent = 2000u64;
    let out = python_in(
        &path,
        &python,
        code,
        &[path.server_addr().to_string(), port.to_string(), sent.to_string()],
    );
    done.store(true, Ordering::Relaxed);
    echo.join().expect("the echo thread");
    let echoed: u64 = out.trim().parse().unwrap_or_else(|_| panic!("python printed {out:?}"));
    let arrived = received.load(Ordering::Relaxed);
    let traffic = path.traffic().since(&before);
    let one_way = 1.0 - arrived as f64 / sent as f64;
    let round_trip = 1.0 - echoed as f64 / sent as f64;
    println!(
        "NETPATH {}: {arrived} of {sent} datagrams arrived ({:.2}% lost one way), {echoed} echoed ({:.2}% lost \
         there and back); the relay: {traffic}",
        path.profile().describe(),
        one_way * 100.0,
        round_trip * 100.0
    );
    // 2% each way: 40 of 2,000 expected; a wide band, and the round trip about twice.
    assert!(
        (0.01..=0.035).contains(&one_way),
        "{:.2}% of the datagrams were lost on the way to the server, 2% set",
        one_way * 100.0
    );
    assert!(
        (0.02..=0.065).contains(&round_trip),
        "{:.2}% of the datagrams were lost there and back, about 4% expected",
        round_trip * 100.0
    );
    // Beside the datagrams, the odd packet of the namespace's own may cross (and be lost).
    assert!(
        traffic.to_server.lost.abs_diff(sent - arrived) <= 2,
        "the relay lost {} packets towards the server, the server missed {}",
        traffic.to_server.lost,
        sent - arrived
    );
}

#[test]
fn mobile_path_holds_its_rate() {
    let Some((path, python)) = path_and_python("mobile") else {
        return;
    };
    let listener = TcpListener::bind((path.server_addr(), 0)).expect("a listener on the server's address");
    let port = listener.local_addr().expect("its address").port();
    let bytes = 3_000_000usize;
    // The server sends 3 MB to the player; the player times it from the first byte.
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.write_all(&vec![b'x'; bytes]);
        }
    });
    let code = "import socket, sys, time\n\
                s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
                n, total = int(sys.argv[3]), 0\n\
                first = None\n\
                while total < n:\n\
                \x20   b = s.recv(65536)\n\
                \x20   if not b: break\n\
                \x20   if first is None: first = time.monotonic()\n\
                \x20   total += len(b)\n\
                print(total, time.monotonic() - first)\n";
    let out = python_in(
        &path,
        &python,
        code,
        &[path.server_addr().to_string(), port.to_string(), bytes.to_string()],
    );
    let mut words = out.split_whitespace();
    let total: f64 = words.next().and_then(|w| w.parse().ok()).expect("bytes received");
    let seconds: f64 = words.next().and_then(|w| w.parse().ok()).expect("seconds taken");
    let mbit = total * 8.0 / seconds / 1e6;
    println!(
        "NETPATH {}: {total} bytes in {seconds:.2} s, {mbit:.2} Mbit/s; the relay: {}",
        path.profile().describe(),
        path.traffic()
    );
    assert_eq!(total as usize, bytes, "the whole transfer arrived");
    assert!(
        (2.5..=5.3).contains(&mbit),
        "a TCP transfer over the 5 Mbit/s path went at {mbit:.2} Mbit/s"
    );
}

#[test]
fn namespace_and_devices_are_gone_after_drop() {
    let Some((path, _)) = path_and_python("clean") else {
        return;
    };
    let namespace = path.namespace().to_owned();
    let device = path.devices()[0].clone();
    assert!(
        netns_list().contains(&namespace),
        "{namespace} exists while the path is open"
    );
    drop(path);
    assert!(
        !netns_list().contains(&namespace),
        "{namespace} is still there after Drop"
    );
    let link = Command::new("ip").args(["link", "show", &device]).output().expect("ip");
    assert!(!link.status.success(), "device {device} is still there after Drop");
}

#[test]
fn a_namespace_left_by_a_killed_run_is_removed() {
    if require_tool("ip").is_none() {
        return;
    }
    // A process id above pid_max never runs: its namespace is stale.
    let stale = "ldash-p4194999-0";
    let _ = Command::new("ip").args(["netns", "add", stale]).status();
    let Some((_path, _)) = path_and_python("clean") else {
        let _ = Command::new("ip").args(["netns", "delete", stale]).status();
        return;
    };
    assert!(
        !netns_list().contains(stale),
        "the stale namespace {stale} was not removed"
    );
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
