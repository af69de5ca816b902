//! Harness for the filesystem tests: a real, small filesystem that can fill (a loop-mounted ext4
//! image, or a size-limited tmpfs where loop devices are unavailable), the recorder's file
//! layout, and the daemon as a child process. Every guard cleans up on drop, even on failure.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_retentiond::index::Index;

/// A mounted filesystem of a fixed size; unmounted and removed on drop.
pub struct SmallFs {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    pub kind: &'static str,
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl SmallFs {
    /// Mounts an ext4 image of `mib` MiB (a tmpfs with `size=` if loop mounts are impossible).
    pub fn new(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let img = dir.path().join("data.img");
        let img_s = img.to_str().unwrap();
        let mnt_s = mnt.to_str().unwrap();
        let size = format!("{mib}M");
        let kind = if run("truncate", &["-s", &size, img_s])
            && run("mkfs.ext4", &["-q", "-F", img_s])
            && run("mount", &["-o", "loop", img_s, mnt_s])
        {
            "ext4-loop"
        } else if run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", mnt_s],
        ) {
            eprintln!("loop mount impossible here: using a tmpfs of {size}");
            "tmpfs"
        } else {
            panic!("unable to mount a small filesystem (needs root: loop+ext4 or tmpfs)");
        };
        Self { dir, mnt, kind }
    }

    /// Mounts the image again after [`SmallFs::unmount`] (ext4 only).
    pub fn remount(&self) {
        let img = self.dir.path().join("data.img");
        assert!(run(
            "mount",
            &[
                "-o",
                "loop",
                img.to_str().unwrap(),
                self.mnt.to_str().unwrap()
            ]
        ));
    }

    pub fn unmount(&self) {
        let m = self.mnt.to_str().unwrap();
        if !run("umount", &[m]) {
            run("umount", &["-l", m]);
        }
    }

    /// Used and usable fractions as the daemon computes them (f_bavail).
    pub fn usage(&self) -> f64 {
        let d = fleet_retentiond::disk::measure(&self.mnt).unwrap();
        d.used_bytes as f64 / d.capacity() as f64
    }

    pub fn available(&self) -> u64 {
        fleet_retentiond::disk::measure(&self.mnt)
            .unwrap()
            .available_bytes
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if fleet_retentiond::disk::is_mount_point(&self.mnt).unwrap_or(false) {
            self.unmount();
        }
    }
}

/// The station's layout on the data filesystem.
pub struct Station {
    pub fs: SmallFs,
    /// `<data>/` of the recorder: `.buffer/` and `data/` inside.
    pub recorder: PathBuf,
    pub recordings: PathBuf,
    pub state: PathBuf,
    pub run_dir: tempfile::TempDir,
    pub config: PathBuf,
    pub next_seq: u64,
}

impl Station {
    pub fn new(mib: u64, extra_config: &str) -> Self {
        let fs = SmallFs::new(mib);
        let recorder = fs.mnt.join("recorder");
        let recordings = recorder.join("data");
        std::fs::create_dir_all(recorder.join(".buffer")).unwrap();
        std::fs::create_dir_all(&recordings).unwrap();
        let state = fs.mnt.join("fleet/retention");
        let run_dir = tempfile::tempdir().unwrap();
        let config = run_dir.path().join("retentiond.toml");
        let mut s = Self {
            fs,
            recorder,
            recordings,
            state,
            run_dir,
            config,
            next_seq: 1,
        };
        s.write_config(extra_config);
        s
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.run_dir.path().join("metrics.json")
    }

    pub fn write_config(&mut self, extra: &str) {
        // These stations have an uploader (the plan's classes follow the uploaded flag), unless
        // a test says otherwise: `uploader` defaults to "auto", which finds none here.
        let extra = if extra.contains("uploader") {
            extra.to_owned()
        } else if extra.contains("[policy]\n") {
            extra.replacen("[policy]\n", "[policy]\nuploader = true\n", 1)
        } else {
            format!("{extra}\n[policy]\nuploader = true\n")
        };
        let text = format!(
            "recordings-dir = {:?}\nmount-point = {:?}\nstate-dir = {:?}\nmetrics-path = {:?}\n\
             trust-time = \"never\"\n{extra}\n",
            self.recordings,
            self.fs.mnt,
            self.state,
            self.metrics_path()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Writes one segment the way fleet-recorderd does (see [`record_segment`]).
    pub fn record(&mut self, audio_bytes: usize, repaired: bool) -> std::io::Result<String> {
        let seq = self.next_seq;
        self.next_seq += 1;
        record_segment(&self.recorder, seq, audio_bytes, repaired)
    }

    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.recordings)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wav"))
            .collect();
        v.sort();
        v
    }

    pub fn index(&self) -> Index {
        Index::open(&self.state.join("index.sqlite")).unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_fleet-retentiond"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// `run --once`; returns the exit code.
    pub fn once(&self) -> i32 {
        let out = self.cli(&["run", "--once"]);
        out.status.code().unwrap_or(-1)
    }

    pub fn spawn(&self) -> DaemonGuard {
        let child = Command::new(env!("CARGO_BIN_EXE_fleet-retentiond"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        DaemonGuard { child: Some(child) }
    }

    pub fn metrics(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.metrics_path()).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Present rows' paths, deleted rows' (path, reason), and rows still pending an unlink.
    pub fn rows(&self) -> (Vec<String>, Vec<(String, String)>, u64) {
        let index = self.index();
        let c = index.connection();
        let mut present: Vec<String> = c
            .prepare("SELECT path FROM recordings WHERE local_deleted = 0 ORDER BY path")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        present.sort();
        let deleted = c
            .prepare("SELECT path, coalesce(deleted_reason, '') FROM recordings WHERE local_deleted = 1 ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let pending: u64 = c
            .query_row(
                "SELECT count(*) FROM recordings WHERE pending_unlink = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (present, deleted, pending)
    }
}

/// Writes a segment into `<recorder>/.buffer/`, fsyncs it, renames it into `<recorder>/data/`
/// and fsyncs both directories, as fleet-recorderd promotes segments. Returns the file name, or
/// the error (ENOSPC) after removing the partial file.
pub fn record_segment(
    recorder: &Path,
    seq: u64,
    audio_bytes: usize,
    repaired: bool,
) -> std::io::Result<String> {
    let name = segment_name(seq);
    let tmp = recorder.join(".buffer").join(&name);
    let data = recorder.join("data");
    let result = write_wav(&tmp, seq, audio_bytes, repaired, &name)
        .and_then(|()| Ok(fleet_durable::rename(&tmp, &data.join(&name))?));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| name)
}

/// The recorder's name format (`fleet_recorderd::segment::segment_name`, documented in
/// docs/reference/retentiond.md): `20261122T185300.123Z_<station>_<device>_<seq:08>.wav`.
pub fn segment_name(seq: u64) -> String {
    // One minute per segment from a fixed origin; the clock is irrelevant to retention.
    let t = 1_795_373_580 + seq as i64 * 60;
    let (d, s) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, day) = civil(d);
    format!(
        "{y:04}{m:02}{day:02}T{:02}{:02}{:02}.123Z_st-1_mic0_{seq:08}.wav",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A 16-bit mono 384 kHz WAV with a GUANO chunk like the recorder's.
pub fn write_wav(
    path: &Path,
    seq: u64,
    audio_bytes: usize,
    repaired: bool,
    name: &str,
) -> std::io::Result<()> {
    let mut guano = format!(
        "GUANO|Version: 1.0\nTimestamp: 2026-11-22T18:53:00Z\nSamplerate: 384000\nOriginal Filename: {name}\n\
         FLEET|Version: 1\nFLEET|Station: st-1\nFLEET|Device: mic0\nFLEET|Channels: 1\nFLEET|Segment Seq: {seq}\n\
         FLEET|Clock Trusted: false\nLength: {:.6}\n",
        audio_bytes as f64 / 2.0 / 384_000.0
    );
    if repaired {
        guano.push_str("FLEET|Closed By: recovery\nFLEET|Repaired: true\n");
    }
    if guano.len() % 2 == 1 {
        guano.push('\n');
    }
    let data_len = u32::try_from(audio_bytes).unwrap();
    let riff_len = 4 + (8 + 16) + (8 + data_len) + (8 + guano.len() as u32);
    let mut f = File::create(path)?;
    let mut head = Vec::with_capacity(44);
    head.extend_from_slice(b"RIFF");
    head.extend_from_slice(&riff_len.to_le_bytes());
    head.extend_from_slice(b"WAVEfmt ");
    head.extend_from_slice(&16u32.to_le_bytes());
    head.extend_from_slice(&1u16.to_le_bytes());
    head.extend_from_slice(&1u16.to_le_bytes());
    head.extend_from_slice(&384_000u32.to_le_bytes());
    head.extend_from_slice(&768_000u32.to_le_bytes());
    head.extend_from_slice(&2u16.to_le_bytes());
    head.extend_from_slice(&16u16.to_le_bytes());
    head.extend_from_slice(b"data");
    head.extend_from_slice(&data_len.to_le_bytes());
    f.write_all(&head)?;
    let chunk = vec![0x11u8; 64 * 1024];
    let mut left = audio_bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.write_all(b"guan")?;
    f.write_all(&(guano.len() as u32).to_le_bytes())?;
    f.write_all(guano.as_bytes())?;
    f.sync_all()
}

/// A running daemon, SIGKILLed on drop.
pub struct DaemonGuard {
    pub child: Option<Child>,
}

impl DaemonGuard {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `f` holds, up to `timeout`.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}
