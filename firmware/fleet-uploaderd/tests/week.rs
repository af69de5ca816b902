//! The "done when" scenario, compressed: on a loop-mounted ext4, segments written by the
//! recorder's code, indexed and kept in policy by retentiond (its library, as the daemon runs it),
//! uploaded by the uploader to s3s-fs through a link that drops at random: a week of segments
//! (one every two hours) at two seconds each. Every recording ends uploaded intact (its server copy
//! decoded and compared with the samples when it was marked) or still on disk; retention deletes
//! only uploaded recordings; the disk never fills (every segment is written, never the panic tier).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Pcm;
use common::s3::{Fault, Proxy, S3Server};
use fleet_core::retention::Tier;
use fleet_retentiond::daemon::Daemon;
use fleet_uploaderd::daemon::{Turn, Uploader};
use fleet_uploaderd::flac::{self, PcmLayout};
use fleet_uploaderd::upload::Outcome;

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        run("umount", &[self.0.to_str().unwrap()]);
    }
}

/// A small ext4 through a loop device (a tmpfs where loop mounts are impossible); `None` when
/// neither can be mounted (not root).
fn small_fs(dir: &Path, mib: u64) -> Option<Mounted> {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let img = dir.join("data.img");
    let (img_s, mnt_s) = (img.to_str().unwrap(), mnt.to_str().unwrap());
    let size = format!("{mib}M");
    let ok = (run("truncate", &["-s", &size, img_s])
        && run("mkfs.ext4", &["-q", "-F", "-m", "0", img_s])
        && run("mount", &["-o", "loop", img_s, mnt_s]))
        || run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", mnt_s],
        );
    ok.then(|| Mounted(mnt))
}

/// A small deterministic generator (the scenario replays the same link drops every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn a_compressed_week_with_a_flaky_link_loses_no_recording_and_never_fills_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = small_fs(tmp.path(), 10)
        .expect("a loop-mounted ext4: the test command runs as root (README)");
    let mnt = fs.0.clone();
    let recordings = mnt.join("fleet/recordings/data");
    let retention = mnt.join("fleet/retention");
    let uploader = mnt.join("fleet/uploader");
    for d in [&recordings, &retention, &uploader] {
        std::fs::create_dir_all(d).unwrap();
    }
    let rcfg = fleet_retentiond::config::parse(&format!(
        "recordings-dir = \"{}\"\nmount-point = \"{}\"\nstate-dir = \"{}\"\ntrust-time = \"never\"\n\
         [policy]\nuploader = true\nupdate-reserve-mib = 0\nfloor-seconds = 0\nfloor-target-seconds = 0\n\
         [daemon]\nballast-mib = 1\n",
        recordings.display(),
        mnt.display(),
        retention.display()
    ))
    .unwrap();
    let mut retentiond = Daemon::open(rcfg).unwrap();
    retentiond.reconcile().unwrap();

    let server = S3Server::start(&tmp.path().join("s3"));
    let proxy = Proxy::start(server.port);
    std::fs::write(
        uploader.join("credentials.toml"),
        format!(
            "access-key-id = \"{}\"\nsecret-access-key = \"{}\"\n",
            common::s3::ACCESS_KEY,
            common::s3::SECRET_KEY
        ),
    )
    .unwrap();
    let ucfg_path = tmp.path().join("uploaderd.toml");
    std::fs::write(
        &ucfg_path,
        format!(
            "recordings-dir = \"{}\"\nindex-path = \"{}\"\nstate-dir = \"{}\"\ntrust-time = \"never\"\n\
             data-dir = \"{}\"\n\
             [retry]\nbase-seconds = 0.01\nmax-seconds = 0.02\ndead-letter-after = 3\n\
             dead-letter-retry-seconds = 0.05\n\
             [destination]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\ntimeout-seconds = 5\n",
            recordings.display(),
            retention.join("index.sqlite").display(),
            uploader.display(),
            mnt.display(),
            proxy.endpoint(),
            common::s3::BUCKET
        ),
    )
    .unwrap();
    let mut up = Uploader::new(fleet_uploaderd::config::load(&ucfg_path).unwrap()).unwrap();

    // 84 two-hourly segments of 2 s (192 KB each, 16 MB in all) on a 10 MiB disk.
    let pcm = Pcm {
        rate: 48_000,
        channels: 1,
        bits: 16,
        frames: 48_000 * 2,
    };
    let mut rng = Lcg(17);
    let mut written: Vec<String> = Vec::new();
    let mut verified: BTreeSet<String> = BTreeSet::new();
    let (mut drops, mut marked, mut failures) = (0, 0, 0);
    for seq in 1..=84u64 {
        // The recorder: never fails for a full disk (this unwrap is the "disk never fills").
        let path = common::recording(&recordings, "st-1", "mic-0", seq, pcm);
        written.push(path.file_name().unwrap().to_string_lossy().into_owned());
        retentiond.catch_up().unwrap();
        let cycle = retentiond.cycle().unwrap();
        assert!(
            cycle.tier < Tier::Panic,
            "segment {seq}: the disk reached the panic tier"
        );
        // The link: fine half the time, otherwise cut mid-request or refused.
        let fault = match rng.next(10) {
            0..=2 => Fault::DropAfter(200 + rng.next(200_000)),
            3 | 4 => Fault::Refuse,
            _ => Fault::None,
        };
        if fault != Fault::None {
            drops += 1;
        }
        proxy.set(fault);
        for _ in 0..3 {
            match up.turn(&mut || true) {
                Turn::Tried(Outcome::Marked { key, .. }) => {
                    marked += 1;
                    // Intact on the server: decode the server's copy against the recording.
                    let name = Path::new(&key)
                        .file_stem()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    let wav = recordings.join(format!("{name}.wav"));
                    let copy = tmp.path().join("copy.flac");
                    std::fs::write(&copy, server.object(&key).unwrap()).unwrap();
                    let info = fleet_retentiond::wav::read(&wav).unwrap();
                    let layout = PcmLayout::of(&info).unwrap();
                    flac::verify(&wav, &layout, &copy, &mut || true).unwrap();
                    verified.insert(format!("{name}.wav"));
                }
                Turn::Tried(Outcome::Failed { .. }) => failures += 1,
                Turn::Tried(Outcome::SkippedDeleted) => {}
                Turn::Sleep(d) => std::thread::sleep(d.min(std::time::Duration::from_millis(5))),
            }
        }
    }
    // The link comes back for good: the backlog drains.
    proxy.set(Fault::None);
    for _ in 0..400 {
        match up.turn(&mut || true) {
            Turn::Tried(Outcome::Marked { key, .. }) => {
                let name = Path::new(&key)
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                verified.insert(format!("{name}.wav"));
                marked += 1;
            }
            Turn::Tried(_) => {}
            Turn::Sleep(_) if up.status().queue_recordings == 0 => break,
            Turn::Sleep(d) => std::thread::sleep(d.min(std::time::Duration::from_millis(20))),
        }
    }
    retentiond.catch_up().unwrap();
    retentiond.cycle().unwrap();

    let index = fleet_retentiond::index::Index::open(&retention.join("index.sqlite")).unwrap();
    let conn = index.connection();
    let mut lost = Vec::new();
    let mut deleted_unuploaded = Vec::new();
    for name in &written {
        let (uploaded, deleted, reason): (bool, bool, Option<String>) = conn
            .query_row(
                "SELECT uploaded, local_deleted, deleted_reason FROM recordings WHERE path = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let on_disk = recordings.join(name).exists();
        if uploaded && !verified.contains(name) {
            lost.push(format!("{name}: marked but never verified on the server"));
        }
        if !(on_disk || (uploaded && verified.contains(name))) {
            lost.push(format!(
                "{name}: neither on disk nor uploaded intact ({reason:?})"
            ));
        }
        if deleted && !uploaded {
            deleted_unuploaded.push(format!("{name} ({reason:?})"));
        }
    }
    let deletions: i64 = conn
        .query_row(
            "SELECT count(*) FROM recordings WHERE local_deleted = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!(
        "week: {} segments, {drops} link faults, {failures} failed tries, {marked} uploaded, \
         {deletions} deleted by retention, {} still on disk",
        written.len(),
        written
            .iter()
            .filter(|n| recordings.join(n).exists())
            .count()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        deleted_unuploaded.is_empty(),
        "deleted before upload: {deleted_unuploaded:?}"
    );
    assert!(
        deletions > 0,
        "the disk was small enough that retention had to delete"
    );
    assert!(drops > 10 && failures > 0, "the link really dropped");
    assert_eq!(up.status().queue_recordings, 0, "the backlog drained");
}
