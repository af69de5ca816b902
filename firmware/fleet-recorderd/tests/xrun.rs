//! An xrun through the real alsa-lib path: `vmic_rt` paced by a dummy JACK server, and a reader
//! that stalls longer than the device buffer. alsa-lib then reports EPIPE; the recorder must close
//! the segment, record the gap and go on in a new segment.
//!
//! The recording runs in a child process (this same test, re-executed) so that the test-only ALSA
//! configuration can be given through the environment without touching this process's environment.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Bench, Jackd, read_segment};
use fleet_recorderd::capture::{
    AlsaSource, CaptureError, CaptureSource, Negotiated, ReadOutcome, StreamSpec,
};
use fleet_recorderd::config::{Config, Limits};
use fleet_recorderd::guano;
use fleet_recorderd::metrics::DeviceMetrics;
use fleet_recorderd::recording::{StopFlag, ensure_dirs, run_session};

const CHILD_ENV: &str = "FLEET_RECORDERD_XRUN_CHILD";
const RATE: u32 = 16_000;

/// The real ALSA source, with a reader that falls asleep once.
struct SleepyReader {
    inner: AlsaSource,
    frames: u64,
    stall_after_frames: u64,
    stall: Duration,
    stalled: bool,
}

impl CaptureSource for SleepyReader {
    fn is_present(&mut self) -> bool {
        self.inner.is_present()
    }
    fn open(&mut self, spec: &StreamSpec) -> Result<Negotiated, CaptureError> {
        self.inner.open(spec)
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, CaptureError> {
        if !self.stalled && self.frames >= self.stall_after_frames {
            self.stalled = true;
            std::thread::sleep(self.stall);
        }
        let r = self.inner.read(buf)?;
        if let ReadOutcome::Frames { frames, .. } = r {
            self.frames += frames as u64;
        }
        Ok(r)
    }
    fn recover(&mut self) -> Result<(), CaptureError> {
        self.inner.recover()
    }
    fn close(&mut self) {
        self.inner.close();
    }
    fn describe(&self) -> &str {
        self.inner.describe()
    }
}

fn record_in_child(dir: &Path) {
    let config = Config::load(&dir.join("recorderd.toml"), &Limits::default()).expect("config");
    let dev = &config.devices[0];
    ensure_dirs(&config.data_dir).expect("dirs");
    let setup = config.session_setup(dev, 0, Some(u64::from(RATE) * 3));
    let source = SleepyReader {
        inner: AlsaSource::new(dev.locator.clone()),
        frames: 0,
        stall_after_frames: u64::from(RATE) * 6 / 5,
        // Longer than the 1 s device buffer.
        stall: Duration::from_millis(2500),
        stalled: false,
    };
    let metrics = Arc::new(DeviceMetrics::default());
    let report = run_session(source, &setup, &StopFlag::new(), &metrics).expect("session");
    assert!(report.source.stalled, "the reader stalled");
    assert!(
        metrics.xruns.load(Ordering::Relaxed) >= 1,
        "alsa-lib reported the overrun"
    );
    assert!(metrics.gaps.load(Ordering::Relaxed) >= 1);
}

#[test]
fn an_xrun_is_recorded_as_a_gap_and_starts_a_new_segment() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        record_in_child(Path::new(&dir));
        return;
    }
    let bench = Bench::new();
    let jack = Jackd::start(RATE, 256);
    let source = bench.source(RATE as usize * 2 * 20, 3);
    bench.config(
        &bench.vmic_rt(),
        "rate = 16000\nsegment-seconds = 10\nperiod-ms = 16\nbuffer-ms = 1000\nstall-timeout-ms = 5000",
    );
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "an_xrun_is_recorded_as_a_gap_and_starts_a_new_segment",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, bench.dir.path())
        .env("XDG_CONFIG_HOME", bench.xdg())
        .env_remove("ALSA_CONFIG_PATH")
        .env("JACK_DEFAULT_SERVER", &jack.name)
        .env("JACK_NO_START_SERVER", "1")
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "child recording failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let files = bench.promoted();
    let segs: Vec<(Vec<u8>, String)> = files.iter().map(|f| read_segment(f)).collect();
    // A loaded machine may add gaps of its own: look for the xrun.
    let at = segs
        .iter()
        .position(|(_, t)| guano::field(t, "FLEET|Closed By") == Some("xrun"))
        .expect("a segment closed by the xrun");
    let (first, _) = &segs[at];
    let (_, b) = segs.get(at + 1).expect("a new segment after the xrun");
    assert!(
        segs[..=at].iter().map(|(d, _)| d.len()).sum::<usize>() >= RATE as usize * 2 * 6 / 5,
        "what came before the stall is recorded before the gap"
    );
    assert_eq!(guano::field(b, "FLEET|Gap Cause"), Some("xrun"));
    let gap_ms: u64 = guano::field(b, "FLEET|Gap Before Ms")
        .expect("gap recorded")
        .parse()
        .expect("number");
    assert!(
        gap_ms >= 500,
        "a 2.5 s stall over a 1 s buffer loses time, got {gap_ms} ms"
    );
    let total: usize = segs.iter().map(|(d, _)| d.len()).sum();
    assert_eq!(total, RATE as usize * 2 * 3);
    // Each segment is itself a continuous run of the source (never spliced within a file).
    for (seg, _) in &segs {
        let head = &seg[..64.min(seg.len())];
        let start = source
            .windows(head.len())
            .position(|w| w == head)
            .expect("segment start in source");
        assert!(
            source[start..start + seg.len()] == seg[..],
            "segment is a continuous run"
        );
    }
    assert!(!first.is_empty());
}
