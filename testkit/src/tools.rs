//! The external tools a test or the benchmark needs (ffmpeg, Chromium, nginx, ...): found on PATH,
//! skipped with a message when missing, unless `LDASH_REQUIRE_TOOLS=1` (set by CI) makes a missing
//! tool a failure.

use std::path::PathBuf;

/// Whether every tool must be there (`LDASH_REQUIRE_TOOLS=1`).
pub fn tools_required() -> bool {
    std::env::var("LDASH_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// The full path of a program on PATH (or in /usr/sbin and /usr/bin, where Debian puts nginx and
/// varnishd for users whose PATH lacks them).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Says that `what` is missing: a failure when tools are required, otherwise a `SKIPPED` line
/// telling how to get it.
pub fn missing(what: &str, how: &str) {
    assert!(
        !tools_required(),
        "{what} is required (LDASH_REQUIRE_TOOLS=1) but missing: {how}"
    );
    eprintln!("SKIPPED: {what} is missing ({how}; set LDASH_REQUIRE_TOOLS=1 to fail instead)");
}

/// The path of a tool a test needs; None (the test skips) when it is not installed, unless tools
/// are required, where it fails.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        missing(name, "not installed; CI installs it");
    }
    found
}

/// A free TCP port on loopback (and, with `udp_too`, its UDP twin), released for a server to bind.
/// Another process may take it in between: launchers retry ([`crate::daemon`]).
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
