//! The capture loop allocates nothing in steady state: every allocation made on the capture thread
//! between its 20th and 900th read is counted by a test-only global allocator.
// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleet_recorderd::capture::{
    CaptureError, CaptureSource, Negotiated, ReadOutcome, SampleFormat, StreamSpec,
};
use fleet_recorderd::config::{Config, Limits};
use fleet_recorderd::metrics::DeviceMetrics;
use fleet_recorderd::recording::{StopFlag, ensure_dirs, run_session};
use fleet_recorderd::segment::Stamp;

struct Counting;

static CAPTURE_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        CAPTURE_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Frames as fast as they are asked for, 480 at a time, stamped by the sample clock.
struct Synthetic {
    reads: u64,
    frames: u64,
    rate: u32,
}

impl CaptureSource for Synthetic {
    fn is_present(&mut self) -> bool {
        true
    }
    fn open(&mut self, _spec: &StreamSpec) -> Result<Negotiated, CaptureError> {
        Ok(Negotiated {
            period_frames: 480,
            buffer_frames: 48_000,
        })
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, CaptureError> {
        self.reads += 1;
        // Steady state only: not the open, the first blocks or the end of the session.
        COUNTING.with(|c| c.set((20..900).contains(&self.reads)));
        let n = (buf.len() / 2).min(480);
        for (i, s) in buf[..n * 2].chunks_exact_mut(2).enumerate() {
            s.copy_from_slice(&((self.frames + i as u64) as u16).to_le_bytes());
        }
        let ns = self.frames * 1_000_000_000 / u64::from(self.rate);
        self.frames += n as u64;
        Ok(ReadOutcome::Frames {
            frames: n,
            stamp: Stamp {
                monotonic_ns: 1_000_000_000 + ns,
                wall_unix_ns: 1_795_373_580_000_000_000 + ns as i64,
            },
        })
    }
    fn recover(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
    fn close(&mut self) {
        COUNTING.with(|c| c.set(false));
    }
    fn describe(&self) -> &str {
        "synthetic"
    }
}

#[test]
fn the_capture_loop_allocates_nothing_in_steady_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "station-id = \"st\"\ndata-dir = \"{}\"\nclock-trust = \"never\"\n\
         [profiles.p]\nrate = 48000\nsegment-seconds = 1\nperiod-ms = 10\nbuffer-ms = 1000\n\
         [[devices]]\nid = \"mic\"\nalsa-name = \"unused\"\nprofile = \"p\"\n",
        dir.path().display()
    );
    let config =
        Config::parse(&text, std::path::Path::new("t.toml"), &Limits::default()).expect("config");
    ensure_dirs(&config.data_dir).expect("dirs");
    let dev = &config.devices[0];
    assert_eq!(dev.profile.spec.format, SampleFormat::S16);
    let setup = config.session_setup(dev, 0, Some(48_000 * 10));
    let metrics = Arc::new(DeviceMetrics::default());
    let report = run_session(
        Synthetic {
            reads: 0,
            frames: 0,
            rate: 48_000,
        },
        &setup,
        &StopFlag::new(),
        &metrics,
    )
    .expect("session");
    assert!(report.source.reads >= 900, "steady state was reached");
    assert_eq!(report.promoted.len(), 10, "ten segments written meanwhile");
    assert_eq!(
        CAPTURE_ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the capture thread"
    );
}
