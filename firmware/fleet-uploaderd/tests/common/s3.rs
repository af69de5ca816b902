//! A real S3 server (s3s-fs, installed by tests/setup.d/80-uploader.sh) on a loopback port, and a
//! fault-injecting TCP proxy in front of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "fleet-test-access";
pub const SECRET_KEY: &str = "fleet-test-secret-0123456789";
pub const BUCKET: &str = "recordings";

fn s3s_fs() -> PathBuf {
    if let Ok(p) = std::env::var("FLEET_S3S_FS") {
        return PathBuf::from(p);
    }
    for p in ["/opt/fleet-test/s3s-fs/bin/s3s-fs"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("s3s-fs")
}

/// s3s-fs serving `root` (one directory per bucket) with the test credentials.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
}

impl S3Server {
    pub fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let (child, port) = fleet_testkit::listen::start_on_free_port(
            "s3s-fs",
            Duration::from_secs(20),
            |port| {
                let bin = s3s_fs();
                Command::new(&bin)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}: {e} (is s3s-fs installed? tests/setup.d/80-uploader.sh, \
                             or set FLEET_S3S_FS)",
                            bin.display()
                        )
                    })
            },
            || "(s3s-fs's output is not kept)".to_owned(),
        )
        .expect("start s3s-fs");
        Self {
            child,
            port,
            root: root.to_owned(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The object's bytes as the server stores them.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(BUCKET).join(key)).ok()
    }

    /// Every object key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                    if !rel.starts_with('.') && !rel.contains("/.") {
                        out.push(rel);
                    }
                }
            }
        }
        let mut out = Vec::new();
        let base = self.root.join(BUCKET);
        walk(&base, &base, &mut out);
        out.retain(|k| k.ends_with(".flac") || k.ends_with(".wav"));
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything.
    None,
    /// Close both sides once this many request bytes went through (a link dropping mid-upload).
    DropAfter(u64),
    /// Answer every request with this status, without reaching the server.
    Status(u16),
    /// Refuse connections (close at once).
    Refuse,
    /// Pass at most this many bytes per second upstream (a slow link).
    Slow(u64),
    /// Flip one byte of the request stream at this offset (damage in transit).
    Corrupt(u64),
}

/// A TCP proxy on a loopback port in front of `upstream`.
pub struct Proxy {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    stop: Arc<AtomicBool>,
    /// Request bytes passed upstream.
    pub passed: Arc<AtomicU64>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, fault: Fault, counter: Option<Arc<AtomicU64>>) {
    let (limit, slow, corrupt) = match fault {
        Fault::DropAfter(n) => (Some(n), None, None),
        Fault::Slow(r) => (None, Some(r), None),
        Fault::Corrupt(at) => (None, None, Some(at)),
        _ => (None, None, None),
    };
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0u64;
    let started = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n as u64 >= l => {
                let k = usize::try_from(l.saturating_sub(sent)).unwrap();
                let _ = to.write_all(&buf[..k]);
                break;
            }
            _ => n,
        };
        if let Some(at) = corrupt
            && at >= sent
            && at < sent + n as u64
        {
            buf[usize::try_from(at - sent).unwrap()] ^= 0x01;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(c) = &counter {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        if let Some(rate) = slow {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(w) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(w);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Proxy {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let fault = Arc::new(Mutex::new(Fault::None));
        let stop = Arc::new(AtomicBool::new(false));
        let passed = Arc::new(AtomicU64::new(0));
        let (f, s, p) = (fault.clone(), stop.clone(), passed.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let fault = *f.lock().unwrap();
                match fault {
                    Fault::Refuse => drop(client),
                    Fault::Status(code) => {
                        std::thread::spawn(move || {
                            let mut c = client;
                            c.set_read_timeout(Some(Duration::from_millis(200)))
                                .unwrap();
                            let mut buf = [0u8; 4096];
                            let _ = c.read(&mut buf);
                            let body = format!(
                                "<?xml version=\"1.0\"?><Error><Code>Injected{code}</Code></Error>"
                            );
                            let _ = write!(
                                c,
                                "HTTP/1.1 {code} Injected\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = c.shutdown(Shutdown::Both);
                        });
                    }
                    _ => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let counter = p.clone();
                        std::thread::spawn(move || pump(client, server, fault, Some(counter)));
                        std::thread::spawn(move || pump(s2, c2, Fault::None, None));
                    }
                }
            }
        });
        Self {
            port,
            fault,
            stop,
            passed,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
