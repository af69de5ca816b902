//! The uploader's figures: FLAC size and CPU against the reference encoder (`flac -5`) at 48 and
//! 384 kHz, upload throughput against a reference S3 client (boto3) over loopback to s3s-fs, and
//! the daemon's peak RSS, and SFTP throughput against OpenSSH's `sftp` over loopback to a private
//! sshd (root only). Prints a table; asserts nothing about speed.
//!
//! `cargo bench -p fleet-uploaderd --bench uploader` (needs sox, flac, s3s-fs, boto3 and OpenSSH:
//! tests/setup.d/80-uploader.sh and `pip install boto3`). `FLEET_BENCH_SECONDS` scales the audio;
//! `FLEET_BENCH_PART=flac|upload|sftp` runs one part; `FLEET_BENCH_REPEAT` (default 3) sets the
//! interleaved runs per measurement (the table shows medians); `FLEET_BENCH_RUNNER` runs another build of
//! the daemon (a cross-built one under qemu-user).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_retentiond::index::{Index, NewRecording};
use fleet_uploaderd::flac::{self, PcmLayout};
use nix::sys::resource::{UsageWho, getrusage};

// The tests' sshd and S3 harnesses (they allow their own unused items).
#[path = "../tests/common/s3.rs"]
mod s3;
#[path = "../tests/common/sftp.rs"]
mod sshd;

use s3::{ACCESS_KEY as ACCESS, SECRET_KEY as SECRET};

fn cpu(who: UsageWho) -> f64 {
    let u = getrusage(who).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn max_rss_kib(who: UsageWho) -> i64 {
    getrusage(who).unwrap().max_rss()
}

/// Field-like audio: pink noise with a chirping tone, as sox makes it.
fn audio(path: &Path, rate: u32, seconds: u32) {
    let st = Command::new("sox")
        .args(["-n", "-r", &rate.to_string(), "-c", "1", "-b", "16"])
        .arg(path)
        .args(["synth", &seconds.to_string(), "pinknoise", "vol", "0.05"])
        .status()
        .expect("sox");
    assert!(st.success());
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Ours and `flac -5` take turns, `repeat` times each per rate; the table shows the medians.
fn flac_section(dir: &Path, seconds: u32, repeat: usize) {
    println!(
        "FLAC: fleet-uploaderd (libFLAC level 5, block 4096, GUANO comment) vs flac -5, pink noise, mono 16-bit, median of {repeat} interleaved runs"
    );
    println!(
        "| rate | audio | WAV MiB | ratio ours | ratio flac -5 | ours/flac size | CPU s per audio hour: encode / decode check / flac -5 | CPU ours/flac |"
    );
    for (rate, secs) in [(48_000u32, seconds), (384_000, seconds / 4)] {
        let wav = dir.join(format!("a{rate}.wav"));
        audio(&wav, rate, secs);
        let info = fleet_retentiond::wav::read(&wav).unwrap();
        let layout = PcmLayout::of(&info).unwrap();
        let wav_len = std::fs::metadata(&wav).unwrap().len() as f64;
        let ours = dir.join(format!("a{rate}.flac"));
        let reference = dir.join(format!("a{rate}.ref.flac"));
        let (mut enc, mut dec, mut refc) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeat.max(1) {
            let c0 = cpu(UsageWho::RUSAGE_SELF);
            flac::encode(&wav, &layout, "GUANO|Version: 1.0", &ours, &mut || true).unwrap();
            let c1 = cpu(UsageWho::RUSAGE_SELF);
            flac::verify(&wav, &layout, &ours, &mut || true).unwrap();
            let c2 = cpu(UsageWho::RUSAGE_SELF);
            let k0 = cpu(UsageWho::RUSAGE_CHILDREN);
            let st = Command::new("flac")
                .args(["-5", "-f", "-s", "-o"])
                .arg(&reference)
                .arg(&wav)
                .status()
                .expect("flac");
            assert!(st.success());
            let k1 = cpu(UsageWho::RUSAGE_CHILDREN);
            enc.push(c1 - c0);
            dec.push(c2 - c1);
            refc.push(k1 - k0);
        }
        let (e, d, k) = (median(&mut enc), median(&mut dec), median(&mut refc));
        let ours_len = std::fs::metadata(&ours).unwrap().len() as f64;
        let ref_len = std::fs::metadata(&reference).unwrap().len() as f64;
        let per_hour = 3600.0 / f64::from(secs);
        println!(
            "| {} kHz | {secs} s | {:.1} | {:.4} | {:.4} | {:.4} | {:.2} / {:.2} / {:.2} | {:.2} |",
            rate / 1000,
            wav_len / f64::from(1 << 20),
            ours_len / wav_len,
            ref_len / wav_len,
            ours_len / ref_len,
            e * per_hour,
            d * per_hour,
            k * per_hour,
            e / k.max(1e-6),
        );
    }
}

/// A station directory with one indexed recording and a config for the binary.
fn station(dir: &Path, wav: &Path, destination: &str, format: &str) -> PathBuf {
    let rec = dir.join("rec");
    let state = dir.join("state");
    std::fs::create_dir_all(&rec).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let name = "20261206T000000.000Z_st-1_mic-0_00000001.wav";
    std::fs::copy(wav, rec.join(name)).unwrap();
    let index_path = dir.join("index.sqlite");
    let size = std::fs::metadata(wav).unwrap().len();
    Index::open(&index_path)
        .unwrap()
        .insert(&[NewRecording {
            path: name.into(),
            station: "st-1".into(),
            device: "mic-0".into(),
            sequence: 1,
            start_unix_ms: Some(1_796_515_200_000),
            start_trusted: true,
            duration_ms: None,
            sample_rate: None,
            size_bytes: size,
            data_bytes: None,
            repaired: false,
        }])
        .unwrap();
    std::fs::write(
        state.join("credentials.toml"),
        format!("access-key-id = \"{ACCESS}\"\nsecret-access-key = \"{SECRET}\"\n"),
    )
    .unwrap();
    let cfg = dir.join("uploaderd.toml");
    std::fs::write(
        &cfg,
        format!(
            "recordings-dir = \"{}\"\nindex-path = \"{}\"\nstate-dir = \"{}\"\nformat = \"{format}\"\n\
             data-dir = \"{}\"\ntrust-time = \"always\"\n{destination}\n",
            rec.display(),
            index_path.display(),
            state.display(),
            dir.display()
        ),
    )
    .unwrap();
    cfg
}

fn s3_destination(port: u16) -> String {
    format!(
        "[destination]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:{port}\"\nbucket = \"recordings\""
    )
}

fn run_once(cfg: &Path) -> (Duration, i64) {
    let t = Instant::now();
    // FLEET_BENCH_RUNNER runs another build, e.g. the aarch64 one under
    // "qemu-aarch64-static -L /usr/aarch64-linux-gnu <binary>".
    let runner = std::env::var("FLEET_BENCH_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_fleet-uploaderd")),
    };
    let st = cmd
        .arg("--config")
        .arg(cfg)
        .arg("--once")
        .env(
            "RUST_LOG",
            std::env::var("FLEET_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .status()
        .unwrap();
    assert!(st.success());
    (t.elapsed(), max_rss_kib(UsageWho::RUSAGE_CHILDREN))
}

fn upload_section(dir: &Path, mib: u64) {
    let wav = dir.join("big.wav");
    // Incompressible enough: the throughput of the link, not of the encoder.
    let secs = u32::try_from(mib * (1 << 20) / 96_000).unwrap();
    audio(&wav, 48_000, secs);
    let size = std::fs::metadata(&wav).unwrap().len() as f64;
    let server = s3::S3Server::start(&dir.join("s3"));
    let port = server.port;
    let cfg = station(&dir.join("wav"), &wav, &s3_destination(port), "wav");
    let (ours, rss_wav) = run_once(&cfg);
    // Peak RSS of the daemon encoding, verifying and uploading a 384 kHz recording as FLAC.
    let bat = dir.join("bat.wav");
    audio(&bat, 384_000, 60);
    let cfg = station(&dir.join("flac"), &bat, &s3_destination(port), "flac");
    // Before the Python client runs: the children's peak RSS is the uploader's alone.
    let (t, rss_flac) = run_once(&cfg);
    let script = [
        "import boto3, time, sys",
        "from boto3.s3.transfer import TransferConfig",
        "port, key, secret, path = sys.argv[1:5]",
        "s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:' + port, aws_access_key_id=key,",
        "                  aws_secret_access_key=secret, region_name='us-east-1')",
        "for threads in (False, True):",
        "    c = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=8 << 20,",
        "                       use_threads=threads)",
        "    t = time.monotonic()",
        "    s3.upload_file(path, 'recordings', 'ref-%s.wav' % threads, Config=c)",
        "    print(time.monotonic() - t)",
    ]
    .join("\n");
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([&port.to_string(), ACCESS, SECRET])
        .arg(&wav)
        .output()
        .expect("python3 with boto3");
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let mbs = |s: f64| size / s / 1e6;
    println!();
    println!(
        "Upload over loopback to s3s-fs, {:.0} MiB WAV, multipart 8 MiB parts (format = wav)",
        size / f64::from(1 << 20)
    );
    println!("| client | seconds | MB/s | throughput ours / client |");
    println!(
        "| fleet-uploaderd --once (process, incl. index and HEADs) | {:.2} | {:.1} | |",
        ours.as_secs_f64(),
        mbs(ours.as_secs_f64())
    );
    for (name, t) in [
        "boto3 upload_file, one thread",
        "boto3 upload_file, threads",
    ]
    .iter()
    .zip(&times)
    {
        println!(
            "| {name} | {t:.2} | {:.1} | {:.2} |",
            mbs(*t),
            t / ours.as_secs_f64()
        );
    }
    if times.is_empty() {
        println!(
            "(boto3 missing: {})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    println!();
    println!(
        "Peak RSS (children, max over runs): {} KiB after the WAV upload; {} KiB after a 60 s 384 kHz FLAC upload ({:.2} s)",
        rss_wav,
        rss_flac,
        t.as_secs_f64()
    );
}

/// Our SFTP upload (connect, look, send, confirmation, mark) with the default `verify = "auto"`
/// (the server's hash: `openssl dgst -sha256`, else `sha256sum`) and with `verify = "read-back"`, against OpenSSH's `sftp` putting
/// the same file, and putting then getting it (the bytes a read-back moves).
fn sftp_section(dir: &Path, mib: u64, repeat: usize) {
    let wav = dir.join("big.wav");
    if !wav.exists() {
        let secs = u32::try_from(mib * (1 << 20) / 96_000).unwrap();
        audio(&wav, 48_000, secs);
    }
    let size = std::fs::metadata(&wav).unwrap().len() as f64;
    let server = sshd::SshServer::start(&dir.join("sshd"), sshd::Mode::ReadWrite);
    let mbs = |s: f64| size / s / 1e6;
    let mut ours = Vec::new();
    let mut ours_read_back = Vec::new();
    let mut put = Vec::new();
    let mut put_get = Vec::new();
    let mut session = Vec::new();
    let mut shell = Vec::new();
    // Peak RSS of the children: after the first run of ours (auto), before any other client
    // ran but sox; then over every run of ours.
    let (mut rss_auto, mut rss) = (None, 0);
    for run in 0..repeat.max(1) {
        let st = dir.join(format!("sftp-station-{run}"));
        let keys = st.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::copy(&server.user_key, keys.join("id_ed25519")).unwrap();
        std::fs::write(keys.join("known_hosts"), server.known_hosts_line()).unwrap();
        let remote = server.root.join(format!("run-{run}"));
        std::fs::create_dir_all(&remote).unwrap();
        let dest = format!(
            "[destination]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             remote-dir = \"{}\"\nprivate-key-file = \"{}\"\nknown-hosts-file = \"{}\"",
            server.port,
            server.user,
            remote.display(),
            keys.join("id_ed25519").display(),
            keys.join("known_hosts").display()
        );
        let cfg = station(&st, &wav, &dest, "wav");
        let (t, peak) = run_once(&cfg);
        ours.push(t.as_secs_f64());
        rss_auto.get_or_insert(peak);
        rss = rss.max(peak);
        let st_rb = dir.join(format!("sftp-station-{run}-read-back"));
        let keys_rb = st_rb.join("keys");
        std::fs::create_dir_all(&keys_rb).unwrap();
        for f in ["id_ed25519", "known_hosts"] {
            std::fs::copy(keys.join(f), keys_rb.join(f)).unwrap();
        }
        let remote_rb = server.root.join(format!("run-{run}-read-back"));
        std::fs::create_dir_all(&remote_rb).unwrap();
        let dest_rb = dest
            .replace(
                &remote.display().to_string(),
                &remote_rb.display().to_string(),
            )
            .replace(&keys.display().to_string(), &keys_rb.display().to_string())
            + "\nverify = \"read-back\"";
        let cfg_rb = station(&st_rb, &wav, &dest_rb, "wav");
        let (t, peak) = run_once(&cfg_rb);
        ours_read_back.push(t.as_secs_f64());
        rss = rss.max(peak);
        let sftp = |batch: &str| {
            let b = st.join("batch");
            std::fs::write(&b, batch).unwrap();
            let t = Instant::now();
            let ok = Command::new("sftp")
                .args(["-q", "-b"])
                .arg(&b)
                .arg("-i")
                .arg(&server.user_key)
                .arg("-o")
                .arg(format!(
                    "UserKnownHostsFile={}",
                    keys.join("known_hosts").display()
                ))
                .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
                .args(["-P", &server.port.to_string()])
                .arg(format!("{}@127.0.0.1", server.user))
                .stdout(Stdio::null())
                .status()
                .expect("run sftp (openssh-client)")
                .success();
            assert!(ok, "sftp failed");
            t.elapsed().as_secs_f64()
        };
        let r = remote.join("ref.wav");
        put.push(sftp(&format!("put {} {}\n", wav.display(), r.display())));
        // What every client pays before the first byte: ssh, the handshake, the login and
        // sshd starting sftp-server.
        session.push(sftp("pwd\n"));
        put_get.push(sftp(&format!(
            "put {} {}\nget {} {}\n",
            wav.display(),
            r.display(),
            r.display(),
            st.join("back.wav").display()
        )));
        // A login shell starting on the server for one exec (what the hash's exec costs on top
        // of the SFTP subsystem's own shell, unless it overlaps the upload).
        let t = Instant::now();
        let ok = Command::new("ssh")
            .arg("-i")
            .arg(&server.user_key)
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                keys.join("known_hosts").display()
            ))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .args(["-p", &server.port.to_string()])
            .arg(format!("{}@127.0.0.1", server.user))
            .arg("true")
            .stdout(Stdio::null())
            .status()
            .expect("run ssh (openssh-client)")
            .success();
        assert!(ok, "ssh true failed");
        shell.push(t.elapsed().as_secs_f64());
        let last = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
        println!(
            "sftp run {run}: ours (auto) {:.2} s, ours (read-back) {:.2} s, sftp put {:.2} s, \
             put+get {:.2} s => RATIO put/ours {:.2} (read-back {:.2})",
            last(&ours),
            last(&ours_read_back),
            last(&put),
            last(&put_get),
            last(&put) / last(&ours),
            last(&put) / last(&ours_read_back),
        );
    }
    let mut ratios: Vec<f64> = put.iter().zip(&ours).map(|(p, o)| p / o).collect();
    let ratio = median(&mut ratios);
    let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
    let (o, p, pg) = (median(&mut ours), median(&mut put), median(&mut put_get));
    let orb = median(&mut ours_read_back);
    let sess = median(&mut session);
    let sh = median(&mut shell);
    println!();
    println!(
        "SFTP over loopback to sshd + sftp-server, {:.0} MiB WAV (format = wav), median of {} interleaved runs",
        size / f64::from(1 << 20),
        ours.len()
    );
    println!("| client | seconds | MB/s of the object | throughput ours / client |");
    println!(
        "| fleet-uploaderd --once, verify = auto (process: index, connect, upload and SHA-256, server's hash, mark) | {o:.2} | {:.1} | |",
        mbs(o)
    );
    println!(
        "| fleet-uploaderd --once, verify = read-back (upload, read-back SHA-256) | {orb:.2} | {:.1} | |",
        mbs(orb)
    );
    println!(
        "| sftp put | {p:.2} | {:.1} | {:.2} (read-back: {:.2}) |",
        mbs(p),
        p / o,
        p / orb
    );
    println!(
        "| sftp put + get (the bytes a read-back moves) | {pg:.2} | {:.1} | {:.2} (read-back: {:.2}) |",
        mbs(pg),
        pg / o,
        pg / orb
    );
    println!("| sftp session alone (connect, login, sftp-server, no transfer) | {sess:.2} | | |");
    println!("| ssh exec true (connect, login, the login shell) | {sh:.2} | | |");
    println!();
    println!(
        "SFTP RATIO (throughput ours / sftp put, verify = auto): median {ratio:.2}, runs {lo:.2}..{hi:.2} (goal >= 0.80)"
    );
    println!(
        "Peak RSS of fleet-uploaderd over SFTP (goal <= 16384 KiB): {} KiB with verify = auto; {rss} KiB with verify = read-back (the children's maximum: sox and the daemon only)",
        rss_auto.unwrap_or(0)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: u32 = std::env::var("FLEET_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let part = std::env::var("FLEET_BENCH_PART").unwrap_or_default();
    let repeat: usize = std::env::var("FLEET_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    if part.is_empty() || part == "flac" {
        flac_section(dir.path(), seconds, repeat);
    }
    if part.is_empty() || part == "upload" {
        upload_section(dir.path(), 64);
    }
    if part.is_empty() || part == "sftp" {
        sftp_section(dir.path(), 64, repeat);
    }
}
