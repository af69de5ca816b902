//! What applying a delta costs the station: `fleet_updated::rebuild::rebuild` (the mapped base,
//! the one-pass decode into the mapped output), in a process of its own so that nothing else
//! counts in its memory.
//!
//! `cargo bench -p fleet-updated --bench rebuild` (FLEET_BENCH_MIB=128 sets the base size;
//! FLEET_BENCH_DIR the directory of the files, default the system's temp directory).
//!
//! The parent makes a pseudo-random base, a new version with 19 changed 4 KiB regions and 1 MiB
//! appended, and the patch (zstd level 3, long-distance matching, the window fleetctl chooses);
//! then runs itself again as the child that rebuilds, and prints one table row: patch bytes,
//! wall and CPU seconds, the peak resident set (VmHWM: mapped file pages included), and the
//! peak of its anonymous part (RssAnon, sampled every 2 ms: the heap, what the kernel cannot
//! reclaim from the recorder) and of its file-backed part (RssFile).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHILD: &str = "FLEET_BENCH_REBUILD_CHILD";

fn main() -> anyhow::Result<()> {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(Path::new(&dir));
    }
    let mib: usize = std::env::var("FLEET_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let root =
        std::env::var("FLEET_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let dir = tempfile::tempdir_in(root)?;
    let base = noise(mib << 20, 0x9e37_79b9_7f4a_7c15);
    let mut new = base.clone();
    for i in 0..19 {
        let at = (i * 7 + 3) * (base.len() / 140);
        new[at..at + 4096].copy_from_slice(&noise(4096, i as u64 + 1));
    }
    new.extend_from_slice(&noise(1 << 20, 77));
    let window = fleetctl::delta::window_log_for(base.len() as u64, new.len() as u64);
    let mut enc = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), 3, &base)?;
    enc.window_log(u32::from(window))?;
    enc.long_distance_matching(true)?;
    enc.write_all(&new)?;
    let patch = enc.finish()?;
    std::fs::write(dir.path().join("base"), &base)?;
    std::fs::write(dir.path().join("patch"), &patch)?;
    std::fs::write(dir.path().join("size"), new.len().to_string())?;
    drop((base, new));
    let out = std::process::Command::new(std::env::current_exe()?)
        .env(CHILD, dir.path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "| base MiB | window log | patch bytes | rebuild wall s | CPU s | VmHWM MiB | peak RssAnon KiB | peak RssFile MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {mib} | {window} | {} | {}",
        patch.len(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

fn child(dir: &Path) -> anyhow::Result<()> {
    let size: u64 = std::fs::read_to_string(dir.join("size"))?.parse()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let sampler = std::thread::spawn(move || {
        let (mut anon, mut file) = (0u64, 0u64);
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            anon = anon.max(status_kib("RssAnon:"));
            file = file.max(status_kib("RssFile:"));
            std::thread::sleep(Duration::from_millis(2));
        }
        (anon, file)
    });
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let r = fleet_updated::rebuild::rebuild(
        Some(&dir.join("base")),
        &dir.join("patch"),
        &dir.join("out"),
        31,
        size,
    )?;
    let wall = t.elapsed();
    let cpu = cpu_seconds() - cpu0;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (anon, file) = sampler.join().map_err(|_| anyhow::anyhow!("sampler"))?;
    anyhow::ensure!(r.size == size, "rebuilt {} of {size} bytes", r.size);
    println!(
        "{:.2} | {cpu:.2} | {} | {} | {} |",
        wall.as_secs_f64(),
        status_kib("VmHWM:") / 1024,
        anon,
        file / 1024
    );
    Ok(())
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of this process (/proc/self/stat, in USER_HZ = 100 ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command: state is index 0, utime 11, stime 12.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    for _ in 0..len / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.resize(len, 0);
    v
}
