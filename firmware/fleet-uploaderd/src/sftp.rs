//! The SFTP destination: a directory on an OpenSSH server, through libssh2 (`ssh2`).
//!
//! The host key must be listed in `known-hosts-file` (no switch skips the check); the station
//! logs in with the key in `private-key-file`; both are read at every connect. An object goes to
//! a hidden temp name beside its final name (`.<name>.part`), is fsynced (`fsync@openssh.com`,
//! where the server has it) and renamed into place. SFTP itself has no checksum the server
//! vouches for, so the confirmation asks the server's SHA-256 (`openssl dgst -sha256`, else
//! `sha256sum`) over an exec channel of the same session (`verify = "auto"` or
//! `"remote-hash"`), or reads the object back and hashes it (`"read-back"`, and `"auto"` on a
//! server that refuses the exec): then an upload costs its size once more in download. A temp file left by a cut link or a power cut is continued from
//! its length once its content matches the local object's prefix (read back and hashed), and
//! started over otherwise.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};

use fleet_core::upload::{Checksum, FailureScope, RemoteConfirmation};
use sha2::{Digest as _, Sha256};
use ssh2::{CheckResult, ErrorCode, KnownHostFileKind, MethodType, OpenFlags, OpenType, Session};

use crate::config::{Limits, SftpDestination, SftpVerify};
use crate::pace::{Pacer, STOPPED};

// SFTP status codes (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks).
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_FAILURE: i32 = 4;
const FX_OP_UNSUPPORTED: i32 = 8;

/// Why an SFTP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("unable to read {path}: {message}")]
    Credentials { path: PathBuf, message: String },
    #[error("unable to connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("unable to verify the host key of {host}:{port}: no entry for it in {path}")]
    HostKeyUnknown {
        host: String,
        port: u16,
        path: PathBuf,
    },
    #[error(
        "unable to verify the host key of {host}:{port}: it is not the key {path} lists \
         (a changed server, or someone in between)"
    )]
    HostKeyMismatch {
        host: String,
        port: u16,
        path: PathBuf,
    },
    #[error("unable to log in as {user} with the key in {path}: {message}")]
    Auth {
        user: String,
        path: PathBuf,
        message: String,
    },
    #[error("unable to {op} {path}: {message}")]
    Remote {
        op: &'static str,
        path: String,
        code: ErrorCode,
        message: String,
    },
    #[error("unable to {op}: {message}")]
    Session {
        op: &'static str,
        code: ErrorCode,
        message: String,
    },
    #[error("unable to read {path}")]
    Local {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "unable to hash {path} on the server with openssl dgst or sha256sum \
         (verify = \"remote-hash\"): {why}"
    )]
    RemoteHash { path: String, why: String },
    #[error("upload interrupted by shutdown")]
    Stopped,
}

impl SftpError {
    /// A short stable reason the status file counts.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Self::Credentials { .. } => "credentials".into(),
            Self::Connect { .. } | Self::Session { .. } => "connection".into(),
            Self::HostKeyUnknown { .. } | Self::HostKeyMismatch { .. } => "host-key".into(),
            Self::Auth { .. } => "auth".into(),
            Self::Remote { code, .. } => match code {
                ErrorCode::SFTP(FX_PERMISSION_DENIED) => "permission".into(),
                ErrorCode::SFTP(FX_NO_SUCH_FILE) => "no-such-dir".into(),
                ErrorCode::SFTP(FX_FAILURE) => "remote-failure".into(),
                ErrorCode::SFTP(n) => format!("sftp-{n}"),
                ErrorCode::Session(_) => "connection".into(),
            },
            Self::Local { .. } => "local-read".into(),
            Self::RemoteHash { .. } => "remote-hash".into(),
            Self::Stopped => "shutdown".into(),
        }
    }

    /// Whether the link (and every recording) waits, or only this recording counts a failure.
    /// Everything the server refuses (permissions, a full disk, a missing directory) holds for
    /// every recording, so it is the link's.
    #[must_use]
    pub fn scope(&self) -> FailureScope {
        match self {
            Self::Local { .. } => FailureScope::Recording,
            _ => FailureScope::Link,
        }
    }
}

fn remote_err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(ssh2::Error) -> SftpError + 'a {
    move |e| SftpError::Remote {
        op,
        path: path.to_owned(),
        code: e.code(),
        message: e.message().to_owned(),
    }
}

fn session_err(op: &'static str) -> impl FnOnce(ssh2::Error) -> SftpError {
    move |e| SftpError::Session {
        op,
        code: e.code(),
        message: e.message().to_owned(),
    }
}

/// Errors from `Read`/`Write` on a remote file: the pacer's stop, or the session's. The binding
/// turns an SFTP status into an `io::Error` carrying only its message; the statuses the daemon
/// tells apart are recovered from it (the binding's fixed texts).
fn io_err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(io::Error) -> SftpError + 'a {
    move |e| {
        let message = e.to_string();
        if message.contains(STOPPED) {
            return SftpError::Stopped;
        }
        let code = match message.as_str() {
            "no such file" => ErrorCode::SFTP(FX_NO_SUCH_FILE),
            "permission denied" => ErrorCode::SFTP(FX_PERMISSION_DENIED),
            "failure" => ErrorCode::SFTP(FX_FAILURE),
            _ => ErrorCode::Session(0),
        };
        SftpError::Remote {
            op,
            path: path.to_owned(),
            code,
            message,
        }
    }
}

fn is_sftp(e: &ssh2::Error, code: i32) -> bool {
    e.code() == ErrorCode::SFTP(code)
}

/// Host key algorithms to offer, from the key types the known-hosts file lists (so the server
/// presents a key the file can vouch for), most preferred first.
fn host_key_prefs(known_hosts: &str) -> String {
    let listed: Vec<&str> = known_hosts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let order: &[(&str, &[&str])] = &[
        ("ssh-ed25519", &["ssh-ed25519"]),
        ("ecdsa-sha2-nistp521", &["ecdsa-sha2-nistp521"]),
        ("ecdsa-sha2-nistp384", &["ecdsa-sha2-nistp384"]),
        ("ecdsa-sha2-nistp256", &["ecdsa-sha2-nistp256"]),
        ("ssh-rsa", &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]),
    ];
    order
        .iter()
        .filter(|(t, _)| listed.contains(t))
        .flat_map(|(_, algs)| algs.iter().copied())
        .collect::<Vec<_>>()
        .join(",")
}

/// Ciphers to offer, most preferred first: AES-GCM ahead of the rest of `supported` (libssh2's
/// list, in its order). With OpenSSL, AES-GCM runs on the CPU's AES instructions (x86 AES-NI, the
/// Pi 5's ARMv8 crypto extensions) on both ends, several times faster per byte than the
/// ChaCha20-Poly1305 libssh2 otherwise picks first (its own portable C). Both are OpenSSH
/// defaults; nothing weaker is added.
fn cipher_prefs(supported: &[&str]) -> String {
    let gcm = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"];
    gcm.iter()
        .filter(|c| supported.contains(c))
        .chain(supported.iter().filter(|c| !gcm.contains(c)))
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

fn read_credential(path: &Path, max: u64) -> Result<String, SftpError> {
    let fail = |message: String| SftpError::Credentials {
        path: path.to_owned(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > max {
        return Err(fail(format!("it is larger than {max} bytes")));
    }
    std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))
}

/// Joins SFTP path segments with `/`.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

/// What to do with a temp file found beside the target: continue after `offset` bytes (already
/// on the server and equal to the local prefix), or start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    Continue { offset: u64 },
    StartOver,
}

/// Decides how to use a temp file of `remote_len` bytes for an object of `local_len` bytes,
/// given whether its content equals the local prefix of that length (`None`: not compared).
#[must_use]
pub fn plan_resume(remote_len: Option<u64>, local_len: u64, prefix_matches: bool) -> Resume {
    match remote_len {
        Some(n) if n > 0 && n <= local_len && prefix_matches => Resume::Continue { offset: n },
        _ => Resume::StartOver,
    }
}

/// The exec request that hashes an object on the server: the login shell reads one line from
/// its input, the path, and hashes that file with `openssl dgst -sha256 -r` (OpenSSL uses the
/// CPU's SHA instructions; `-r` prints `sha256sum`'s line format) or, where that fails or
/// OpenSSL is missing, with `sha256sum`. The path is data, never parsed by the shell: `IFS=` keeps
/// its spaces, `-r` its backslashes, the quotes keep it one argument, `--` keeps it from reading
/// as an option. The request goes out when the connection opens, so the server's shell starts
/// while the object uploads; the path follows once the object is in place.
pub const HASH_COMMAND: &str = r#"IFS= read -r p && { openssl dgst -sha256 -r -- "$p" 2>/dev/null || exec sha256sum -- "$p"; }"#;

/// Reads `sha256sum`'s output for `path`, strictly: exactly one line, 64 hex digits, the
/// separator (two spaces, or a space and `*` for binary mode), then `path` itself. Anything else
/// (a name sha256sum escaped, a banner, a second line, a missing newline) is not a hash line.
///
/// # Errors
/// The output is not that line; the message says what is wrong.
pub fn parse_sha256sum(output: &[u8], path: &str) -> Result<[u8; 32], String> {
    let text = std::str::from_utf8(output).map_err(|_| "the output is not UTF-8".to_owned())?;
    let Some(line) = text.strip_suffix('\n') else {
        return Err(if text.is_empty() {
            "no output".into()
        } else {
            "the output does not end in a newline".into()
        });
    };
    if line.contains('\n') {
        return Err("the output has more than one line".into());
    }
    let (hex, rest) = line.split_at_checked(64).ok_or("the line is too short")?;
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))
        .ok_or("64 characters are not followed by the separator")?;
    if name != path {
        return Err(format!("the line names {name:?}, not {path:?}"));
    }
    let mut digest = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => digest[i] = u8::try_from(h * 16 + l).unwrap_or(0),
            _ => return Err("the digest is not 64 hex digits".into()),
        }
    }
    Ok(digest)
}

/// Whether this connection's server hashes objects with `sha256sum` (only asked under
/// `verify = "auto"`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerHash {
    Untried,
    Works,
    /// Refused once, for this reason: the connection reads objects back.
    Refused(String),
}

/// Who computed the checksum in a confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashedBy {
    /// The server's `sha256sum`, over an exec channel.
    Server,
    /// The station, reading the object back.
    ReadBack,
}

/// The object's size and checksum, as a fresh look at the server found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub remote: RemoteConfirmation,
    /// `None` when no checksum was taken (the size differs).
    pub hashed_by: Option<HashedBy>,
}

/// What [`Sftp::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes sent in this try (less than the object after a resume).
    pub bytes_sent: u64,
    /// SHA-256 of the whole object, as read from the station's file for sending.
    pub sha256: [u8; 32],
}

/// One SFTP session, with the credentials of this connect.
pub struct Sftp {
    // Field order: the channels close before the session.
    /// An exec channel running [`HASH_COMMAND`], opened at connect (`verify` other than
    /// `"read-back"`): its shell waits for a path. `None` once taken, or when opening it failed
    /// (the hash then opens a channel of its own, which reports the refusal).
    primed: RefCell<Option<ssh2::Channel>>,
    sftp: ssh2::Sftp,
    session: Session,
    dest: SftpDestination,
    buf_bytes: usize,
    read_bytes: usize,
    write_window: usize,
    hash_output_bytes: usize,
    hash_min_bytes_per_second: u64,
    server_hash: RefCell<ServerHash>,
}

impl std::fmt::Debug for Sftp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sftp")
            .field("host", &self.dest.host)
            .field("user", &self.dest.user)
            .finish_non_exhaustive()
    }
}

impl Sftp {
    /// Connects, verifies the host key against `known-hosts-file`, logs in with
    /// `private-key-file` and opens the SFTP channel. Both files are read now (at every connect),
    /// each at most `limits.max_config_bytes`.
    ///
    /// # Errors
    /// A file is unreadable or has a line libssh2 cannot read, the server cannot be reached, its
    /// host key is not listed or differs, or the login fails.
    pub fn connect(dest: &SftpDestination, limits: &Limits) -> Result<Self, SftpError> {
        let max = limits.max_config_bytes;
        let known_hosts = read_credential(&dest.known_hosts_file, max)?;
        let private_key = read_credential(&dest.private_key_file, max)?;
        let addr = format!("{}:{}", dest.host, dest.port);
        let connect_err = |source| SftpError::Connect {
            addr: addr.clone(),
            source,
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to nothing");
        let mut tcp = None;
        for a in (dest.host.as_str(), dest.port)
            .to_socket_addrs()
            .map_err(connect_err)?
        {
            match TcpStream::connect_timeout(&a, dest.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| connect_err(last))?;
        // libssh2 writes whole packets; without this, every small request that follows a
        // write (stat, open, mkdir, rename) waits out the peer's delayed ACK (about 40 ms each
        // on Linux, over 0.4 s per upload).
        tcp.set_nodelay(true).map_err(connect_err)?;
        let mut session = Session::new().map_err(session_err("start an SSH session"))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(u32::try_from(dest.timeout.as_millis()).unwrap_or(u32::MAX));
        let prefs = host_key_prefs(&known_hosts);
        if prefs.is_empty() {
            return Err(SftpError::Credentials {
                path: dest.known_hosts_file.clone(),
                message: "it lists no host key of a supported type".into(),
            });
        }
        session
            .method_pref(MethodType::HostKey, &prefs)
            .map_err(session_err("set the host key algorithms"))?;
        for kind in [MethodType::CryptCs, MethodType::CryptSc] {
            let supported = session
                .supported_algs(kind)
                .map_err(session_err("list the ciphers"))?;
            session
                .method_pref(kind, &cipher_prefs(&supported))
                .map_err(session_err("set the ciphers"))?;
        }
        session
            .handshake()
            .map_err(session_err("complete the SSH handshake"))?;
        verify_host_key(&session, dest, &known_hosts)?;
        session
            .userauth_pubkey_memory(&dest.user, None, &private_key, None)
            .map_err(|e| SftpError::Auth {
                user: dest.user.clone(),
                path: dest.private_key_file.clone(),
                message: e.message().to_owned(),
            })?;
        if !session.authenticated() {
            return Err(SftpError::Auth {
                user: dest.user.clone(),
                path: dest.private_key_file.clone(),
                message: "the server did not accept the key".into(),
            });
        }
        tracing::debug!(
            host = %dest.host,
            cipher = session.methods(MethodType::CryptCs).unwrap_or("?"),
            mac = session.methods(MethodType::MacCs).unwrap_or("?"),
            "logged in"
        );
        let sftp = session
            .sftp()
            .map_err(session_err("open the SFTP channel"))?;
        // The hash's exec goes out now, once the SFTP server runs: its login shell starts while
        // the object uploads (not beside the SFTP server's own shell, which the upload waits
        // for) and then waits for the path.
        let primed = match dest.verify {
            SftpVerify::ReadBack => None,
            SftpVerify::Auto | SftpVerify::RemoteHash => match start_hash(&session) {
                Ok(channel) => Some(channel),
                Err(why) => {
                    tracing::debug!(why = %why, "no exec channel opened ahead");
                    None
                }
            },
        };
        Ok(Self {
            primed: RefCell::new(primed),
            sftp,
            session,
            dest: dest.clone(),
            buf_bytes: limits.chunk_bytes.max(1 << 12),
            read_bytes: limits.sftp_read_bytes.max(1 << 12),
            write_window: limits.sftp_write_window_bytes.max(1 << 12),
            hash_output_bytes: limits.sftp_hash_output_bytes.max(256),
            hash_min_bytes_per_second: limits.sftp_hash_min_bytes_per_second.max(1),
            server_hash: RefCell::new(ServerHash::Untried),
        })
    }

    /// The remote path of an object key.
    #[must_use]
    pub fn path_of(&self, key: &str) -> String {
        join(&self.dest.remote_dir, key)
    }

    /// The object's size, and, when the size is `expect_size`, its SHA-256 as `verify` asks: the
    /// server's `sha256sum`, or a read of the whole object, paced like an upload. `None` when
    /// there is no such object.
    ///
    /// # Errors
    /// Any SFTP failure other than "no such file", a server that refuses the hash under
    /// `verify = "remote-hash"`, or shutdown.
    pub fn confirm(
        &self,
        key: &str,
        expect_size: u64,
        pacer: &mut Pacer<'_>,
    ) -> Result<Option<Confirmed>, SftpError> {
        let path = self.path_of(key);
        let size = match self.sftp.stat(Path::new(&path)) {
            Ok(st) => st.size.unwrap_or(0),
            Err(e) if is_sftp(&e, FX_NO_SUCH_FILE) => return Ok(None),
            Err(e) => return Err(remote_err("look at", &path)(e)),
        };
        let (checksum, hashed_by) = if size == expect_size {
            let (digest, by) = self.hash_object(&path, size, pacer)?;
            (Some(Checksum::Sha256(digest)), Some(by))
        } else {
            (None, None)
        };
        Ok(Some(Confirmed {
            remote: RemoteConfirmation {
                size_bytes: size,
                checksum,
            },
            hashed_by,
        }))
    }

    /// SHA-256 of the whole object at `path` (`size` bytes), by the server or read back.
    fn hash_object(
        &self,
        path: &str,
        size: u64,
        pacer: &mut Pacer<'_>,
    ) -> Result<([u8; 32], HashedBy), SftpError> {
        let ask_server = match self.dest.verify {
            SftpVerify::ReadBack => false,
            SftpVerify::RemoteHash => true,
            SftpVerify::Auto => !matches!(*self.server_hash.borrow(), ServerHash::Refused(_)),
        };
        if ask_server {
            match self.server_sha256(path, size, pacer) {
                Ok(digest) => {
                    *self.server_hash.borrow_mut() = ServerHash::Works;
                    return Ok((digest, HashedBy::Server));
                }
                Err(Refusal::Stopped) => return Err(SftpError::Stopped),
                Err(Refusal::Why(why)) if self.dest.verify == SftpVerify::RemoteHash => {
                    return Err(SftpError::RemoteHash {
                        path: path.to_owned(),
                        why,
                    });
                }
                Err(Refusal::Why(why)) => {
                    tracing::warn!(
                        host = %self.dest.host,
                        path,
                        why = %why,
                        "the server does not hash objects (sha256sum over exec): this \
                         connection confirms by reading objects back"
                    );
                    *self.server_hash.borrow_mut() = ServerHash::Refused(why);
                }
            }
        }
        Ok((self.hash_prefix(path, size, pacer)?, HashedBy::ReadBack))
    }

    /// The server's `sha256sum` of `path`, over an exec channel of this session: the one opened
    /// at connect, or, when there is none or it fails (a server that closes idle channels), a new
    /// one. Waits up to `timeout-seconds` plus `size` at the slowest hashing granted, checking for
    /// shutdown at every `timeout-seconds`.
    fn server_sha256(
        &self,
        path: &str,
        size: u64,
        pacer: &mut Pacer<'_>,
    ) -> Result<[u8; 32], Refusal> {
        if path.contains('\n') {
            return Err(Refusal::Why(
                "the path holds a line break, which the server's shell would read as two lines"
                    .into(),
            ));
        }
        let primed = self.primed.borrow_mut().take();
        if let Some(channel) = primed {
            match self.hash_on(channel, path, size, pacer) {
                Err(Refusal::Why(why)) => {
                    tracing::debug!(why = %why, "the exec channel opened ahead gave no hash; asking on a new one");
                }
                done => return done,
            }
        }
        let channel = start_hash(&self.session).map_err(Refusal::Why)?;
        self.hash_on(channel, path, size, pacer)
    }

    /// Sends `path` to a channel running [`HASH_COMMAND`] and reads its answer.
    fn hash_on(
        &self,
        mut channel: ssh2::Channel,
        path: &str,
        size: u64,
        pacer: &mut Pacer<'_>,
    ) -> Result<[u8; 32], Refusal> {
        let started = std::time::Instant::now();
        let why = |what: &str, e: &dyn std::fmt::Display| Refusal::Why(format!("{what}: {e}"));
        channel
            .write_all(format!("{path}\n").as_bytes())
            .map_err(|e| why("unable to send the path to the command", &e))?;
        // Nothing more goes to its input: a forced `internal-sftp` sees the end and exits.
        channel
            .send_eof()
            .map_err(|e| why("unable to close the command's input", &e.message()))?;
        let budget = self.dest.timeout
            + std::time::Duration::from_secs(size / self.hash_min_bytes_per_second);
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match channel.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.len() > self.hash_output_bytes {
                        return Err(Refusal::Why(format!(
                            "more than {} bytes of output",
                            self.hash_output_bytes
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    if !pacer.keep_going() {
                        return Err(Refusal::Stopped);
                    }
                    if started.elapsed() > budget {
                        return Err(Refusal::Why(format!(
                            "no answer within {} s",
                            budget.as_secs()
                        )));
                    }
                }
                Err(e) => return Err(why("unable to read the output", &e)),
            }
        }
        let mut err = Vec::new();
        let _ = (&mut channel.stderr())
            .take(self.hash_output_bytes as u64)
            .read_to_end(&mut err);
        channel
            .wait_close()
            .map_err(|e| why("the command did not end", &e.message()))?;
        let status = channel
            .exit_status()
            .map_err(|e| why("no exit status", &e.message()))?;
        if status != 0 {
            // What it said (an SFTP-only account answers on its output: "This service allows
            // sftp connections only."), first line, shortened.
            let said = if err.is_empty() { &out } else { &err };
            let said = String::from_utf8_lossy(said);
            let first: String = said
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .chars()
                .take(200)
                .collect();
            return Err(Refusal::Why(format!("exit status {status}: {first:?}")));
        }
        let digest = parse_sha256sum(&out, path)
            .map_err(|e| Refusal::Why(format!("unreadable output: {e}")))?;
        tracing::debug!(
            path,
            ms = started.elapsed().as_millis(),
            "hashed on the server"
        );
        Ok(digest)
    }

    /// SHA-256 of the first `len` bytes of the remote file, read through the pacer.
    fn hash_prefix(
        &self,
        path: &str,
        len: u64,
        pacer: &mut Pacer<'_>,
    ) -> Result<[u8; 32], SftpError> {
        let file = self
            .sftp
            .open(Path::new(path))
            .map_err(remote_err("open", path))?;
        let started = std::time::Instant::now();
        // libssh2 keeps up to four times the read size requested ahead: large reads keep the
        // link full. Under a cap, reads stay at the pacer's chunk so bursts stay small.
        let read_size = if pacer.is_capped() {
            self.buf_bytes
        } else {
            self.read_bytes
        };
        let file = io::BufReader::with_capacity(read_size, file);
        let mut reader = pacer.reader_in(file.take(len));
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; self.buf_bytes];
        let mut got = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(io_err("read back", path))?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            got += n as u64;
        }
        tracing::debug!(
            path,
            bytes = got,
            ms = started.elapsed().as_millis(),
            "read back"
        );
        if got != len {
            return Err(SftpError::Remote {
                op: "read back",
                path: path.to_owned(),
                code: ErrorCode::SFTP(FX_FAILURE),
                message: format!("the server gave {got} of {len} bytes"),
            });
        }
        Ok(sha.finalize().into())
    }

    /// Creates the directories of `key` below `remote-dir` (which must exist).
    fn make_dirs(&self, key: &str) -> Result<(), SftpError> {
        let Some((dirs, _)) = key.rsplit_once('/') else {
            return Ok(());
        };
        let full = self.path_of(dirs);
        if self.sftp.stat(Path::new(&full)).is_ok() {
            return Ok(());
        }
        // remote-dir itself: a clear error when it is missing.
        let base = &self.dest.remote_dir;
        self.sftp
            .stat(Path::new(base))
            .map_err(remote_err("find remote-dir", base))?;
        let mut at = base.clone();
        for part in dirs.split('/') {
            at = join(&at, part);
            let p = Path::new(&at);
            if self.sftp.stat(p).is_ok() {
                continue;
            }
            if let Err(e) = self.sftp.mkdir(p, 0o755) {
                // Another client may have made it meanwhile.
                if self.sftp.stat(p).is_err() {
                    return Err(remote_err("create the directory", &at)(e));
                }
            }
        }
        Ok(())
    }

    /// Sends `local` (of `size` bytes) to `key`: into `.<name>.part`, continuing a temp file
    /// whose content is the local prefix, then fsync and rename into place (replacing an object
    /// of another content). Returns the bytes sent and the SHA-256 of the `size` bytes, hashed
    /// as they are read for sending (no separate pass over the file).
    ///
    /// # Errors
    /// Any SFTP failure, a local read failure (the file is not `size` bytes long), or shutdown.
    pub fn send(
        &self,
        key: &str,
        local: &Path,
        size: u64,
        pacer: &mut Pacer<'_>,
    ) -> Result<Written, SftpError> {
        let target = self.path_of(key);
        let (dir, name) = target.rsplit_once('/').unwrap_or(("", target.as_str()));
        let temp = join(dir, &format!(".{name}.part"));
        self.make_dirs(key)?;
        let local_err = |source| SftpError::Local {
            path: local.to_owned(),
            source,
        };
        let remote_len = match self.sftp.stat(Path::new(&temp)) {
            Ok(st) => st.size,
            Err(e) if is_sftp(&e, FX_NO_SUCH_FILE) => None,
            Err(e) => return Err(remote_err("look at", &temp)(e)),
        };
        // The object's SHA-256, from its first byte: a resumed upload hashes the prefix here.
        let mut sha = Sha256::new();
        let prefix_matches = match remote_len {
            Some(n) if n > 0 && n <= size => {
                let mut f = File::open(local).map_err(local_err)?;
                let mut prefix = Sha256::new();
                io::copy(&mut (&mut f).take(n), &mut prefix).map_err(local_err)?;
                let matches = self.hash_prefix(&temp, n, pacer)? == prefix.clone().finalize()[..];
                if matches {
                    sha = prefix;
                }
                matches
            }
            _ => false,
        };
        let resume = plan_resume(remote_len, size, prefix_matches);
        tracing::debug!(path = %temp, ?remote_len, ?resume, "sending");
        let mut remote = match resume {
            Resume::Continue { .. } => {
                self.sftp
                    .open_mode(Path::new(&temp), OpenFlags::WRITE, 0o644, OpenType::File)
            }
            Resume::StartOver => self.sftp.open_mode(
                Path::new(&temp),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o644,
                OpenType::File,
            ),
        }
        .map_err(remote_err("open for writing", &temp))?;
        let offset = match resume {
            Resume::Continue { offset } => offset,
            Resume::StartOver => 0,
        };
        let mut f = File::open(local).map_err(local_err)?;
        f.seek(SeekFrom::Start(offset)).map_err(local_err)?;
        remote
            .seek(SeekFrom::Start(offset))
            .map_err(io_err("write", &temp))?;
        let started = std::time::Instant::now();
        // libssh2 turns what it is handed into 30,000-byte write requests, sends them all and
        // returns once the first is acknowledged; the bytes not yet acknowledged must be handed
        // again, followed by new ones. Handing it a window that slides (topped up when half of it
        // is acknowledged) keeps requests in flight all the time; writing chunk by chunk would
        // drain the pipeline at the end of every chunk. Under a cap the window is the pacer's
        // chunk, so bursts stay small.
        let window = if pacer.is_capped() {
            self.buf_bytes
        } else {
            self.write_window.max(self.buf_bytes)
        };
        let mut reader = pacer.reader(f.take(size - offset));
        let mut buf = vec![0u8; window];
        // buf[start..end]: read from the file, not yet acknowledged by the server.
        let (mut start, mut end) = (0usize, 0usize);
        let mut eof = false;
        let mut sent = 0u64;
        loop {
            if !eof && start >= window / 2 || end == 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while !eof && end < window {
                    match reader.read(&mut buf[end..]) {
                        Ok(0) => eof = true,
                        Ok(n) => {
                            sha.update(&buf[end..end + n]);
                            end += n;
                        }
                        Err(e) if e.to_string().contains(STOPPED) => {
                            return Err(SftpError::Stopped);
                        }
                        Err(e) => return Err(local_err(e)),
                    }
                }
            }
            if start == end {
                break;
            }
            let n = remote
                .write(&buf[start..end])
                .map_err(io_err("write", &temp))?;
            if n == 0 {
                return Err(SftpError::Remote {
                    op: "write",
                    path: temp.clone(),
                    code: ErrorCode::SFTP(FX_FAILURE),
                    message: "the server acknowledged nothing".into(),
                });
            }
            start += n;
            sent += n as u64;
        }
        tracing::debug!(path = %temp, bytes = sent, ms = started.elapsed().as_millis(), "written");
        if offset + sent != size {
            return Err(local_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("it ended after {} of {size} bytes", offset + sent),
            )));
        }
        match remote.fsync() {
            Ok(()) => {}
            Err(e) if is_sftp(&e, FX_OP_UNSUPPORTED) => {
                tracing::debug!(path = %temp, "the server has no fsync@openssh.com");
            }
            Err(e) => return Err(remote_err("fsync", &temp)(e)),
        }
        remote.close().map_err(remote_err("close", &temp))?;
        drop(remote);
        // OpenSSH's rename never replaces (link, then unlink), and the binding has no
        // posix-rename@openssh.com: an object of another content under the name goes first.
        if self.sftp.stat(Path::new(&target)).is_ok() {
            self.sftp
                .unlink(Path::new(&target))
                .map_err(remote_err("replace", &target))?;
        }
        self.sftp
            .rename(Path::new(&temp), Path::new(&target), None)
            .map_err(remote_err("rename into place", &target))?;
        Ok(Written {
            bytes_sent: sent,
            sha256: sha.finalize().into(),
        })
    }

    /// Ends the session politely (best effort).
    pub fn close(self) {
        let _ = self.session.disconnect(None, "done", None);
    }
}

/// Opens an exec channel running [`HASH_COMMAND`]; the reason when the server refuses.
fn start_hash(session: &Session) -> Result<ssh2::Channel, String> {
    let mut channel = session
        .channel_session()
        .map_err(|e| format!("the server opened no session channel: {}", e.message()))?;
    channel
        .exec(HASH_COMMAND)
        .map_err(|e| format!("the server refused the exec request: {}", e.message()))?;
    Ok(channel)
}

/// Why the server's hash was not had.
enum Refusal {
    Why(String),
    Stopped,
}

fn verify_host_key(
    session: &Session,
    dest: &SftpDestination,
    known_hosts: &str,
) -> Result<(), SftpError> {
    let path = &dest.known_hosts_file;
    let mut kh = session
        .known_hosts()
        .map_err(session_err("read the known hosts"))?;
    for (i, line) in known_hosts.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // @revoked and @cert-authority are not understood by libssh2: refuse rather than
        // silently ignore a revocation.
        if line.starts_with('@') {
            return Err(SftpError::Credentials {
                path: path.clone(),
                message: format!(
                    "line {}: markers (@revoked, @cert-authority) are not supported",
                    i + 1
                ),
            });
        }
        kh.read_str(line, KnownHostFileKind::OpenSSH)
            .map_err(|e| SftpError::Credentials {
                path: path.clone(),
                message: format!("line {}: {}", i + 1, e.message()),
            })?;
    }
    let (key, _) = session.host_key().ok_or_else(|| SftpError::Session {
        op: "read the server's host key",
        code: ErrorCode::Session(-1),
        message: "none presented".into(),
    })?;
    match kh.check_port(&dest.host, dest.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SftpError::HostKeyMismatch {
            host: dest.host.clone(),
            port: dest.port,
            path: path.clone(),
        }),
        CheckResult::NotFound | CheckResult::Failure => Err(SftpError::HostKeyUnknown {
            host: dest.host.clone(),
            port: dest.port,
            path: path.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_file_continues_only_when_it_is_the_local_prefix() {
        for (remote, matches, want) in [
            (None, false, Resume::StartOver),
            (Some(0), true, Resume::StartOver),
            (Some(40), true, Resume::Continue { offset: 40 }),
            (Some(100), true, Resume::Continue { offset: 100 }),
            (Some(40), false, Resume::StartOver),
            (Some(101), true, Resume::StartOver),
        ] {
            assert_eq!(
                plan_resume(remote, 100, matches),
                want,
                "{remote:?} {matches}"
            );
        }
    }

    #[test]
    fn host_key_algorithms_follow_the_listed_key_types() {
        let kh = "[st.example.org]:2222 ssh-rsa AAAA\n# c\nst.example.org ssh-ed25519 AAAA x\n";
        assert_eq!(
            host_key_prefs(kh),
            "ssh-ed25519,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
        );
        assert_eq!(host_key_prefs("# nothing\n"), "");
    }

    #[test]
    fn aes_gcm_goes_first_and_every_supported_cipher_stays_offered() {
        let libssh2 = [
            "chacha20-poly1305@openssh.com",
            "aes256-gcm@openssh.com",
            "aes128-gcm@openssh.com",
            "aes256-ctr",
            "aes128-ctr",
        ];
        assert_eq!(
            cipher_prefs(&libssh2),
            "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,\
             aes256-ctr,aes128-ctr"
        );
        // A libssh2 without AES-GCM keeps its own order.
        assert_eq!(
            cipher_prefs(&["aes256-ctr", "aes128-ctr"]),
            "aes256-ctr,aes128-ctr"
        );
    }

    /// What the server's shell makes of the hash command and a path on its input.
    fn hash_with_sh(path: &str) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sh")
            .args(["-c", HASH_COMMAND])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{path}\n").as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap().stdout
    }

    #[test]
    fn the_hash_command_reads_the_path_as_data_whatever_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a.flac",
            "a b",
            " lead and trail ",
            "it's",
            "$(touch pwned)",
            "`touch pwned`; x",
            "-n",
            "*",
            "\"quoted\"",
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, name).unwrap();
            let path = path.to_str().unwrap();
            let want: [u8; 32] = Sha256::digest(name.as_bytes()).into();
            assert_eq!(
                parse_sha256sum(&hash_with_sh(path), path),
                Ok(want),
                "{name:?}"
            );
        }
        assert!(!dir.path().join("pwned").exists());
        // A backslash in a name: `sha256sum` escapes it (not a hash line, so never a mark);
        // whichever program hashes, the answer is the right digest or none.
        let path = dir.path().join("a\\b");
        std::fs::write(&path, "x").unwrap();
        let path = path.to_str().unwrap();
        let want: [u8; 32] = Sha256::digest(b"x").into();
        assert!(
            parse_sha256sum(&hash_with_sh(path), path).is_ok_and(|d| d == want)
                || parse_sha256sum(&hash_with_sh(path), path).is_err()
        );
        let escaped = format!("\\{}  {}\n", hex::encode(want), path.replace('\\', "\\\\"));
        assert!(parse_sha256sum(escaped.as_bytes(), path).is_err());
    }

    #[test]
    fn only_one_strict_sha256sum_line_is_a_hash() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let want: [u8; 32] = Sha256::digest(b"").into();
        let p = "/srv/rec/a.flac";
        assert_eq!(
            parse_sha256sum(format!("{hex}  {p}\n").as_bytes(), p),
            Ok(want)
        );
        assert_eq!(
            parse_sha256sum(format!("{hex} *{p}\n").as_bytes(), p),
            Ok(want)
        );
        let upper = hex.to_uppercase();
        assert_eq!(
            parse_sha256sum(format!("{upper}  {p}\n").as_bytes(), p),
            Ok(want)
        );
        for bad in [
            String::new(),
            format!("{hex}  {p}"),
            format!("{hex}  /srv/rec/b.flac\n"),
            format!("{hex}  {p}\n{hex}  {p}\n"),
            format!("motd\n{hex}  {p}\n"),
            format!("\\{hex}  {p}\n"),
            format!("{}  {p}\n", &hex[..63]),
            format!("{}g  {p}\n", &hex[..63]),
            format!("{hex} {p}\n"),
            format!("{hex}\t{p}\n"),
            "sha256sum: /srv/rec/a.flac: No such file or directory\n".to_owned(),
        ] {
            assert!(parse_sha256sum(bad.as_bytes(), p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remote_paths_join_with_one_slash() {
        assert_eq!(join("/srv/rec/", "a/b.flac"), "/srv/rec/a/b.flac");
        assert_eq!(join("rec", "a.flac"), "rec/a.flac");
    }
}
