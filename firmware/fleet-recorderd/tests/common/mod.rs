//! Harness for tests through the real alsa-lib path: a test-only ALSA configuration (never the
//! machine's), a file-backed capture PCM, a dummy JACK server for pacing, and the daemon binary.
//! Everything started here is killed on drop, also when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleet_recorderd::wav;

const ASOUNDRC: &str = r#"
pcm.vmic {
    @args [ INFILE ]
    @args.INFILE { type string }
    type file
    slave.pcm "null"
    file "/dev/null"
    infile $INFILE
}
pcm.jackcap { type jack  capture_ports { 0 system:capture_1 } }
pcm.vmic_rt {
    @args [ INFILE ]
    @args.INFILE { type string }
    type file
    slave.pcm { type plug slave.pcm "jackcap" }
    file "/dev/null"
    infile $INFILE
}
"#;

/// A temporary directory with `xdg/alsa/asoundrc`, a source file and a data dir.
pub struct Bench {
    pub dir: tempfile::TempDir,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Bench {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("xdg/alsa")).expect("mkdir");
        std::fs::write(dir.path().join("xdg/alsa/asoundrc"), ASOUNDRC).expect("asoundrc");
        Self { dir }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn xdg(&self) -> PathBuf {
        self.path("xdg")
    }
    pub fn data_root(&self) -> PathBuf {
        self.path("rec")
    }
    /// Writes `bytes` of deterministic noise as the raw source; returns it.
    pub fn source(&self, bytes: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let data: Vec<u8> = (0..bytes)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        std::fs::write(self.path("src.raw"), &data).expect("source");
        data
    }
    /// A daemon config recording `pcm` with the given profile lines.
    pub fn config(&self, pcm: &str, profile: &str) -> PathBuf {
        let text = format!(
            r#"
station-id = "st-0042"
data-dir = "{root}"
clock-trust = "always"
utc-offset = "+01:00"

[position]
lat = 52.2
lon = 0.12

[profiles.p]
{profile}

[[devices]]
id = "mic0"
alsa-name = "{pcm}"
make = "Fleet"
model = "File PCM"
profile = "p"
reopen-debounce-ms = 200
"#,
            root = self.data_root().display(),
        );
        let p = self.path("recorderd.toml");
        std::fs::write(&p, text).expect("config");
        p
    }
    pub fn vmic(&self) -> String {
        format!("vmic:INFILE={}", self.path("src.raw").display())
    }
    pub fn vmic_rt(&self) -> String {
        format!("vmic_rt:INFILE={}", self.path("src.raw").display())
    }
    pub fn promoted(&self) -> Vec<PathBuf> {
        list(&self.data_root().join("data"))
    }
    pub fn buffered(&self) -> Vec<PathBuf> {
        list(&self.data_root().join(".buffer"))
    }
}

pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "wav"));
    v.sort();
    v
}

/// The samples of one of our WAV files, and its GUANO text.
pub fn read_segment(path: &Path) -> (Vec<u8>, String) {
    let b = std::fs::read(path).expect("read segment");
    let h = wav::parse_header(&b).expect("our header");
    let declared = h.data_bytes_declared as usize;
    assert_eq!(
        declared,
        b.len() - wav::HEADER_LEN,
        "data size of {}",
        path.display()
    );
    (b[wav::HEADER_LEN..].to_vec(), h.guano_text)
}

/// A dummy JACK server paced in real time.
pub struct Jackd {
    pub name: String,
    child: Child,
}

impl Jackd {
    /// A server name no other test uses.
    pub fn unique_name() -> String {
        format!(
            "fleetrec{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        )
    }
    pub fn start(rate: u32, period: u32) -> Self {
        Self::start_named(Self::unique_name(), rate, period)
    }
    pub fn start_named(name: String, rate: u32, period: u32) -> Self {
        let child = Command::new("jackd")
            .args(["-n", &name, "--no-realtime", "-d", "dummy"])
            .args(["-r", &rate.to_string(), "-p", &period.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("jackd (tests/setup.d/00-apt.sh installs jackd2)");
        let j = Self { name, child };
        let ok = Command::new("jack_wait")
            .args(["-s", &j.name, "-w", "-t", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("jack_wait");
        assert!(ok.success(), "jackd {} did not start", j.name);
        j
    }
}

impl Drop for Jackd {
    /// SIGTERM first: a killed jackd leaves its semaphores and shared memory in /dev/shm, and enough
    /// of those make the next server hang at start.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Clients that a test SIGKILLed leave their semaphores behind: remove this server's.
        let tag = format!("_{}_", self.name);
        if let Ok(rd) = std::fs::read_dir("/dev/shm") {
            for e in rd.filter_map(|e| e.ok()) {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("jack") && n.contains(&tag) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The daemon under test.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub fn command(bench: &Bench, config: &Path, jack: Option<&Jackd>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet-recorderd"));
        c.arg("--config")
            .arg(config)
            .env("XDG_CONFIG_HOME", bench.xdg())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("ALSA_CONFIG_PATH")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(bench.path("daemon.log"))
                    .expect("log"),
            ));
        if let Some(j) = jack {
            c.env("JACK_DEFAULT_SERVER", &j.name)
                .env("JACK_NO_START_SERVER", "1");
        }
        c
    }
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }
    pub fn spawn(mut cmd: Command) -> Self {
        Self {
            child: cmd.spawn().expect("spawn fleet-recorderd"),
        }
    }
    /// Waits for exit (panics after `limit`).
    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(t.elapsed() < limit, "daemon did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's status file, if written yet.
pub fn status(bench: &Bench) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(bench.data_root().join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Polls `cond` every 20 ms until it holds (panics after `limit`).
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the reference GUANO reader (PyPI `guano`) over the files; returns its JSON lines.
pub fn guano_reference_read(files: &[PathBuf]) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys
from guano import GuanoFile
for f in sys.argv[1:]:
    g = GuanoFile(f)
    print(json.dumps({
        "timestamp": g["Timestamp"].isoformat(),
        "utcoffset_s": g["Timestamp"].utcoffset().total_seconds(),
        "samplerate": g["Samplerate"],
        "length": g["Length"],
        "make": g["Make"], "model": g["Model"],
        "position": list(g["Loc Position"]),
        "station": g["FLEET", "Station"],
        "device": g["FLEET", "Device"],
        "seq": g["FLEET", "Segment Seq"],
        "closed_by": g["FLEET", "Closed By"],
        "repaired": g.get("FLEET|Repaired"),
        "gap_cause": g.get("FLEET|Gap Cause"),
        "gap_ms": g.get("FLEET|Gap Before Ms"),
        "nframes": g.wav_params.nframes,
        "data_len": len(g.wav_data),
    }))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the reference GUANO reader failed (tests/setup.d/30-recorder.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}
