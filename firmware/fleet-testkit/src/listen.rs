//! Test servers (mosquitto, sshd, an S3 server) on a free loopback port, counted as started
//! only once the listening socket on that port is their own.
//!
//! A port that was free when it was picked can be taken before the server binds it: by a
//! server another test started at the same moment, or by anything else on the machine. The
//! late server then fails to bind and exits, but "does the port accept connections?" still
//! says yes, answered by the other process, and two tests share one broker. CI saw exactly
//! that (two `fleetctl config push` tests each read the other's retained pushes). So a start
//! waits until `/proc` shows the socket listening on the port among the server's own file
//! descriptors; a server that exits first is started again on a fresh port.
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use procfs::net::TcpState;
use procfs::process::{FDTarget, Process};

/// How many fresh ports a start tries before it gives up.
const ATTEMPTS: usize = 5;

/// A port on 127.0.0.1 nothing listens on right now. Someone else may bind it before the
/// caller does: start servers with [`start_on_free_port`], which copes with that.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("unable to bind a loopback port")?;
    Ok(l.local_addr()
        .context("unable to read the bound port")?
        .port())
}

/// How waiting for a server to listen ended, when it did not.
#[derive(Debug)]
enum NotListening {
    /// The server exited first (on a taken port: "address already in use").
    Exited(ExitStatus),
    /// The server still runs but did not listen on its port in time.
    TimedOut,
}

impl std::fmt::Display for NotListening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "exited before listening ({status})"),
            Self::TimedOut => f.write_str("did not listen in time"),
        }
    }
}

/// Whether the process `pid` itself holds a socket listening on TCP `port` (any address).
pub fn listens_on(pid: u32, port: u16) -> anyhow::Result<bool> {
    let pid = i32::try_from(pid).context("pid out of range")?;
    let process = Process::new(pid).with_context(|| format!("no process {pid}"))?;
    let mut listening = Vec::new();
    for table in [process.tcp(), process.tcp6()] {
        // A kernel without IPv6 has no tcp6 table: nothing listens there.
        let Ok(entries) = table else { continue };
        listening.extend(
            entries
                .into_iter()
                .filter(|e| e.state == TcpState::Listen && e.local_address.port() == port)
                .map(|e| e.inode),
        );
    }
    if listening.is_empty() {
        return Ok(false);
    }
    let fds = process
        .fd()
        .with_context(|| format!("unable to read the file descriptors of {pid}"))?;
    Ok(fds.flatten().any(|fd| match fd.target {
        FDTarget::Socket(inode) => listening.contains(&inode),
        _ => false,
    }))
}

/// Waits until `child` itself listens on `port`: not merely until the port accepts.
fn wait_until_listening(
    child: &mut Child,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<Result<(), NotListening>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("unable to poll the server")? {
            return Ok(Err(NotListening::Exited(status)));
        }
        // The process may exit between the two reads: the next round sees it.
        if listens_on(child.id(), port).unwrap_or(false) {
            return Ok(Ok(()));
        }
        if Instant::now() > deadline {
            return Ok(Err(NotListening::TimedOut));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server with `start(port)` on a free port and returns it once it listens there
/// itself; when it exits first (the port was taken meanwhile), starts it again on another
/// free port, up to a few times. `what` names the server in errors; `log` reads what it
/// logged, for the error of a server that failed for another reason.
pub fn start_on_free_port(
    what: &str,
    timeout: Duration,
    mut start: impl FnMut(u16) -> anyhow::Result<Child>,
    log: impl Fn() -> String,
) -> anyhow::Result<(Child, u16)> {
    let mut tried = Vec::new();
    for _ in 0..ATTEMPTS {
        let port = free_port()?;
        let mut child = start(port).with_context(|| format!("unable to start {what}"))?;
        match wait_until_listening(&mut child, port, timeout)? {
            Ok(()) => return Ok((child, port)),
            Err(NotListening::Exited(status)) => tried.push(format!("{port} ({status})")),
            Err(e @ NotListening::TimedOut) => return Err(give_up(child, what, port, &e, &log)),
        }
    }
    bail!(
        "{what} exited before listening on each of {ATTEMPTS} free ports: {}; last log: {}",
        tried.join(", "),
        log()
    )
}

/// Returns `child` once it listens on `port` itself: for a server started again on the port it
/// had. Fails when it exits first (another process took the port meanwhile) or does not listen
/// in time, naming `what`, the port and what `log` reads.
pub fn started_on(
    what: &str,
    mut child: Child,
    port: u16,
    timeout: Duration,
    log: impl Fn() -> String,
) -> anyhow::Result<Child> {
    match wait_until_listening(&mut child, port, timeout)? {
        Ok(()) => Ok(child),
        Err(e) => Err(give_up(child, what, port, &e, &log)),
    }
}

/// Stops a server that did not listen and says why.
fn give_up(
    mut child: Child,
    what: &str,
    port: u16,
    why: &NotListening,
    log: &dyn Fn() -> String,
) -> anyhow::Error {
    // Nothing to report from a process being given up on.
    let _ = child.kill();
    let _ = child.wait();
    anyhow::anyhow!("{what} on port {port} {why}: {}", log())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn python_server(port: u16) -> anyhow::Result<Child> {
        Ok(Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\ns=socket.socket()\n\
                s.bind(('127.0.0.1',int(sys.argv[1])))\ns.listen()\ntime.sleep(60)",
            ])
            .arg(port.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()?)
    }

    #[test]
    fn a_port_answered_by_another_process_does_not_count_as_the_servers() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = other.local_addr().expect("addr").port();
        let mut first = true;
        let (mut child, port) = start_on_free_port(
            "a test server",
            Duration::from_secs(10),
            |free| {
                // The first start is handed the taken port, as a race would.
                let port = if std::mem::take(&mut first) {
                    taken
                } else {
                    free
                };
                python_server(port)
            },
            String::new,
        )
        .expect("started on a second port");
        assert_ne!(port, taken);
        assert!(listens_on(child.id(), port).expect("read /proc"));
        assert!(!listens_on(child.id(), taken).expect("read /proc"));
        assert!(!listens_on(std::process::id(), port).expect("read /proc"));
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    #[test]
    fn a_server_restarted_on_a_port_another_process_took_fails_with_its_log() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = other.local_addr().expect("addr").port();
        let child = python_server(taken).expect("spawn");
        let err = started_on(
            "a test server",
            child,
            taken,
            Duration::from_secs(10),
            || "its log".to_owned(),
        )
        .expect_err("the port is another process's");
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("a test server on port {taken} exited")),
            "{text}"
        );
        assert!(text.contains("its log"), "{text}");
    }

    #[test]
    fn a_server_that_never_listens_is_reported_with_its_log() {
        let err = start_on_free_port(
            "a silent server",
            Duration::from_millis(300),
            |_| Ok(Command::new("sleep").arg("60").spawn()?),
            || "it said nothing".to_owned(),
        )
        .expect_err("never listens");
        let text = format!("{err:#}");
        assert!(text.contains("a silent server"), "{text}");
        assert!(text.contains("did not listen in time"), "{text}");
        assert!(text.contains("it said nothing"), "{text}");
    }
}
