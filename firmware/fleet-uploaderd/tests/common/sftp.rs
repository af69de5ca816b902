//! A real OpenSSH server on a loopback port: a private `sshd -D` (root only: it needs the
//! privilege-separation directory and to log the test user in) with a generated host key, one
//! authorized key, and OpenSSH's own `sftp-server` as the SFTP subsystem. The station logs in as
//! the user running the tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// How long sshd may take to listen after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn sshd() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/bin/sshd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("sshd is not installed: run tests/setup.d/80-uploader.sh (openssh-server)");
}

/// Makes an ed25519 key pair at `path` (and `path.pub`) with `ssh-keygen`.
pub fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fleet-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("run ssh-keygen (openssh-client)")
        .success();
    assert!(ok, "ssh-keygen failed for {}", path.display());
}

/// How the server's SFTP subsystem runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    /// `sftp-server -R`: every write is refused with "permission denied".
    ReadOnly,
    /// `ForceCommand internal-sftp`: every exec request runs the SFTP server instead (no
    /// `sha256sum` on the server, as on a chrooted SFTP-only account).
    InternalSftpOnly,
    /// The sessions' `PATH` (sshd `SetEnv`) finds an `openssl` and a `sha256sum` that write
    /// their name and arguments to `<dir>/hash.calls`, then run the real ones.
    CountingHashes,
    /// As `CountingHashes`, but the `openssl` on the `PATH` is not found (exit 127, nothing
    /// written): the server hashes with `sha256sum`.
    CountingWithoutOpenssl,
    /// The sessions' `PATH` finds an `openssl` and a `sha256sum` that print a well-formed line
    /// with a wrong digest.
    LyingHashes,
}

/// The digest the lying `openssl` and `sha256sum` print.
pub const LIE: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A running sshd; killed (with every session process it started) on drop.
pub struct SshServer {
    child: Option<Child>,
    pub port: u16,
    /// Where the server's keys, config and log live.
    pub dir: PathBuf,
    /// The directory the station uploads into (`remote-dir`, absolute).
    pub root: PathBuf,
    /// The station's key pair, authorized on the server.
    pub user_key: PathBuf,
    pub user: String,
    mode: Mode,
    /// sshd_config lines put ahead of the harness's own (sshd takes the first value of a
    /// keyword, so these win).
    first: String,
}

impl SshServer {
    pub fn start(dir: &Path, mode: Mode) -> Self {
        Self::start_with(dir, mode, "")
    }

    /// Like `start`, with `first` (sshd_config lines) ahead of the harness's configuration.
    pub fn start_with(dir: &Path, mode: Mode, first: &str) -> Self {
        let root = dir.join("remote");
        std::fs::create_dir_all(&root).unwrap();
        let mut server = Self {
            child: None,
            port: 0,
            dir: dir.to_owned(),
            root,
            user_key: dir.join("station_ed25519"),
            user: nix::unistd::User::from_uid(nix::unistd::getuid())
                .unwrap()
                .expect("the test user has a passwd entry")
                .name,
            mode,
            first: first.to_owned(),
        };
        keygen(&dir.join("host_ed25519"));
        keygen(&server.user_key);
        std::fs::copy(
            server.user_key.with_extension("pub"),
            dir.join("authorized_keys"),
        )
        .unwrap();
        let (child, port) = fleet_testkit::listen::start_on_free_port(
            "sshd",
            START_TIMEOUT,
            |port| Ok(server.spawn(port)),
            || server.log(),
        )
        .expect("start sshd");
        server.child = Some(child);
        server.port = port;
        server
    }

    /// Starts sshd on `port` (not waiting for it to listen).
    fn spawn(&self, port: u16) -> Child {
        // sshd refuses to start without its privilege-separation directory (systemd's
        // RuntimeDirectory on a real system).
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (run the tests as root)");
        let d = &self.dir;
        let subsystem = match self.mode {
            Mode::ReadOnly => format!("{SFTP_SERVER} -R"),
            _ => SFTP_SERVER.to_owned(),
        };
        let bin = d.join("bin");
        let calls = d.join("hash.calls");
        let counting = |name: &str| {
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexec /usr/bin/{name} \"$@\"\n",
                calls.display()
            )
        };
        // `openssl dgst -sha256 -r -- <path>`: the path is the fifth argument;
        // `sha256sum -- <path>`: the second.
        let fakes: Vec<(&str, String)> = match self.mode {
            Mode::CountingHashes => vec![
                ("openssl", counting("openssl")),
                ("sha256sum", counting("sha256sum")),
            ],
            Mode::CountingWithoutOpenssl => vec![
                ("openssl", "#!/bin/sh\nexit 127\n".to_owned()),
                ("sha256sum", counting("sha256sum")),
            ],
            Mode::LyingHashes => vec![
                (
                    "openssl",
                    format!("#!/bin/sh\nprintf '%s *%s\\n' {LIE} \"$5\"\n"),
                ),
                (
                    "sha256sum",
                    format!("#!/bin/sh\nprintf '%s  %s\\n' {LIE} \"$2\"\n"),
                ),
            ],
            _ => Vec::new(),
        };
        let extra = match self.mode {
            Mode::InternalSftpOnly => "ForceCommand internal-sftp\n".to_owned(),
            _ if !fakes.is_empty() => {
                std::fs::create_dir_all(&bin).unwrap();
                for (name, script) in &fakes {
                    let path = bin.join(name);
                    std::fs::write(&path, script).unwrap();
                    std::fs::set_permissions(
                        &path,
                        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(
                            0o755,
                        ),
                    )
                    .unwrap();
                }
                format!("SetEnv PATH={}:/usr/bin:/bin\n", bin.display())
            }
            _ => String::new(),
        };
        let config = format!(
            "{first}ListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             AllowTcpForwarding no\nX11Forwarding no\nLogLevel VERBOSE\n\
             Subsystem sftp {subsystem}\n{extra}",
            d = d.display(),
            first = self.first,
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("sshd.log"))
            .unwrap();
        Command::new(sshd())
            .args(["-D", "-e", "-p", &port.to_string(), "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd")
    }

    /// Kills sshd and every process it started (the session processes, their `sftp-server`s
    /// and login shells), as a crash or a power cut of the server would. SIGTERM first (none of
    /// them closes anything gracefully on it, but a login shell still starting runs its exit
    /// traps: root's rc files may hold a lock, such as pyenv's rehash, that a SIGKILL would
    /// leave behind for every later login), then SIGKILL whatever is left.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let mut all = vec![pid];
            let mut i = 0;
            while i < all.len() {
                all.extend(children(all[i]));
                i += 1;
            }
            let signal = |p: u32, s| {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(p).unwrap()),
                    s,
                );
            };
            for p in all.iter().rev() {
                signal(*p, nix::sys::signal::Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && all.iter().any(|p| running(*p)) {
                std::thread::sleep(Duration::from_millis(10));
                let _ = child.try_wait();
            }
            for p in all.iter().rev() {
                signal(*p, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Starts sshd again on the same port with the same keys.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        let child = self.spawn(self.port);
        let child =
            fleet_testkit::listen::started_on("sshd", child, self.port, START_TIMEOUT, || {
                self.log()
            })
            .expect("start sshd again");
        self.child = Some(child);
    }

    /// The `known_hosts` line for this server's host key.
    pub fn known_hosts_line(&self) -> String {
        let pubkey = std::fs::read_to_string(self.dir.join("host_ed25519.pub")).unwrap();
        let mut f = pubkey.split_whitespace();
        let (t, k) = (f.next().unwrap(), f.next().unwrap());
        format!("[127.0.0.1]:{} {t} {k}\n", self.port)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Which counting hash program ran, and with which arguments (`openssl dgst ...`,
    /// `sha256sum -- ...`), in order.
    pub fn hash_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("hash.calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The files under `root` (relative paths), hidden temp files included.
    pub fn files(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }
}

/// Whether `pid` still runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
    })
}

/// The direct children of `pid` (every thread's list).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}
