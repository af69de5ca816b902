//! The recorder through the real alsa-lib path: a file-backed capture PCM (`vmic`, unpaced, or
//! `vmic_rt`, paced by a dummy JACK server), with a test-only ALSA configuration.

mod common;

use std::time::Duration;

use common::{Bench, Daemon, Jackd, guano_reference_read, read_segment, wait_for};
use fleet_recorderd::guano;

#[test]
fn segments_concatenate_to_exactly_the_source_through_alsa() {
    // (rate, channels, format, bytes per sample): a bird profile and a stereo 32-bit one.
    for (rate, channels, format, width) in [(48_000u32, 1u16, "s16", 2usize), (96_000, 2, "s32", 4)]
    {
        let bench = Bench::new();
        let frame = usize::from(channels) * width;
        let seconds = 3.37;
        let frames = (seconds * f64::from(rate)).round() as usize;
        // The file PCM repeats its last buffer past the end: make the source longer than the take.
        let source = bench.source((frames + rate as usize) * frame, u64::from(rate));
        let config = bench.config(
            &bench.vmic(),
            &format!(
                "rate = {rate}\nchannels = {channels}\nformat = \"{format}\"\nsegment-seconds = 1\nperiod-ms = 20\nbuffer-ms = 1000"
            ),
        );
        let mut cmd = Daemon::command(&bench, &config, None);
        cmd.arg("--duration").arg(seconds.to_string());
        let status = Daemon::spawn(cmd).wait(Duration::from_secs(30));
        assert!(status.success(), "daemon failed: {status}");

        // The unpaced PCM delivers faster than real time, so its capture-clock stamps (and the
        // times in the names) are meaningless here: order by sequence number.
        let mut files = bench.promoted();
        files.sort_by_key(|f| {
            let name = f.file_name().expect("name").to_string_lossy().into_owned();
            fleet_recorderd::segment::seq_of(&name, "st-0042", "mic0").expect("our name")
        });
        assert_eq!(files.len(), 4, "3 full segments and the rest");
        assert!(bench.buffered().is_empty(), "nothing left in .buffer");
        let mut all = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let (data, text) = read_segment(f);
            let seq = guano::field(&text, "FLEET|Segment Seq").expect("seq");
            assert_eq!(seq, i.to_string());
            assert!(
                f.to_string_lossy()
                    .ends_with(&format!("_st-0042_mic0_{i:08}.wav"))
            );
            if i < 3 {
                assert_eq!(
                    data.len(),
                    rate as usize * frame,
                    "segment {i} holds exactly 1 s"
                );
            }
            all.extend_from_slice(&data);
        }
        assert_eq!(all.len(), frames * frame);
        assert!(
            all == source[..frames * frame],
            "concatenated segments differ from the source"
        );
    }
}

#[test]
fn guano_is_readable_by_the_reference_reader() {
    let bench = Bench::new();
    bench.source(48_000 * 2 * 3, 7);
    let config = bench.config(
        &bench.vmic(),
        "rate = 48000\nsegment-seconds = 1\nperiod-ms = 20\nbuffer-ms = 1000",
    );
    let mut cmd = Daemon::command(&bench, &config, None);
    cmd.args(["--duration", "1.5"]);
    assert!(Daemon::spawn(cmd).wait(Duration::from_secs(30)).success());
    let files = bench.promoted();
    assert_eq!(files.len(), 2);
    let read = guano_reference_read(&files);
    assert_eq!(read.len(), 2);
    for (i, g) in read.iter().enumerate() {
        assert_eq!(g["samplerate"], 48_000);
        assert_eq!(g["station"], "st-0042");
        assert_eq!(g["device"], "mic0");
        assert_eq!(g["make"], "Fleet");
        assert_eq!(g["model"], "File PCM");
        assert_eq!(g["seq"], i.to_string());
        assert_eq!(g["utcoffset_s"], 3600.0);
        assert_eq!(g["position"][0], 52.2);
        assert!(
            g["timestamp"]
                .as_str()
                .expect("timestamp")
                .ends_with("+01:00")
        );
    }
    assert_eq!(read[0]["length"], 1.0);
    assert_eq!(read[0]["nframes"], 48_000);
    assert_eq!(read[0]["data_len"], 96_000);
    assert_eq!(read[0]["closed_by"], "length");
    assert_eq!(read[1]["length"], 0.5);
    assert_eq!(read[1]["closed_by"], "shutdown");
}

#[test]
fn sigkill_loses_nothing_on_disk_and_the_next_start_repairs_the_open_segment() {
    let bench = Bench::new();
    let jack = Jackd::start(16_000, 256);
    let source = bench.source(16_000 * 2 * 30, 11);
    let config = bench.config(
        &bench.vmic_rt(),
        "rate = 16000\nsegment-seconds = 1\nperiod-ms = 16\nbuffer-ms = 1000\nsync-interval-seconds = 1",
    );
    let daemon = Daemon::spawn(Daemon::command(&bench, &config, Some(&jack)));
    // Two complete segments and a third under way with samples on disk.
    wait_for(
        Duration::from_secs(20),
        "two segments and an open third",
        || {
            bench.promoted().len() >= 2
                && bench
                    .buffered()
                    .first()
                    .is_some_and(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 4096 + 3200))
        },
    );
    drop(daemon); // SIGKILL, no chance to close anything
    let open = bench.buffered();
    assert_eq!(open.len(), 1, "one segment was open");
    let on_disk = std::fs::read(&open[0]).expect("open segment");
    let before: Vec<_> = bench.promoted();

    // Paced in real time, names sort by time in sequence order.
    for (i, f) in before.iter().enumerate() {
        assert!(
            f.to_string_lossy().ends_with(&format!("_{i:08}.wav")),
            "{f:?} is not #{i}"
        );
    }
    // Everything already promoted is complete and continuous from the first sample.
    let mut all = Vec::new();
    for f in &before {
        all.extend_from_slice(&read_segment(f).0);
    }
    assert_eq!(all.len(), 16_000 * 2 * before.len());
    assert!(
        all == source[..all.len()],
        "promoted segments are not the source"
    );

    // The next start repairs and promotes the open segment before recording on.
    let mut cmd = Daemon::command(&bench, &config, Some(&jack));
    cmd.args(["--duration", "0.5"]);
    assert!(Daemon::spawn(cmd).wait(Duration::from_secs(30)).success());
    let name = open[0].file_name().expect("name");
    let repaired = bench.data_root().join("data").join(name);
    let (data, text) = read_segment(&repaired);
    assert_eq!(
        data.len(),
        (on_disk.len() - 4096) / 2 * 2,
        "every whole frame on disk kept"
    );
    assert!(data == on_disk[4096..4096 + data.len()]);
    assert_eq!(guano::field(&text, "FLEET|Repaired"), Some("true"));
    assert_eq!(guano::field(&text, "FLEET|Closed By"), Some("recovery"));
    all.extend_from_slice(&data);
    assert!(
        all == source[..all.len()],
        "the repaired segment does not continue the source"
    );
    // The new session continues the sequence after the repaired segment.
    let after = bench.promoted();
    let last = after.last().expect("segments");
    let (_, text) = read_segment(last);
    assert_eq!(
        guano::field(&text, "FLEET|Segment Seq"),
        Some(
            before
                .len()
                .checked_add(1)
                .expect("small")
                .to_string()
                .as_str()
        )
    );
    let read = guano_reference_read(std::slice::from_ref(&repaired));
    assert_eq!(read[0]["repaired"], "true");
}

#[test]
fn check_config_exits_2_on_an_invalid_config_and_0_on_a_valid_one() {
    let bench = Bench::new();
    let good = bench.config(&bench.vmic(), "rate = 48000");
    let run = |p: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fleet-recorderd"))
            .arg("--config")
            .arg(p)
            .arg("--check-config")
            .output()
            .expect("run")
    };
    assert_eq!(run(&good).status.code(), Some(0));
    let bad = bench.config(
        &bench.vmic(),
        "rate = 48000\nbuffer-ms = 10\nsegment-lenght = 3",
    );
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("segment-lenght"));
    let bad = bench.config(&bench.vmic(), "rate = 48000\nbuffer-ms = 10");
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("profiles.p.buffer-ms"));
}

#[test]
fn a_frozen_daemon_records_the_lost_time_as_a_gap_and_stops_cleanly_on_sigterm() {
    use nix::sys::signal::{Signal, kill};
    let bench = Bench::new();
    let jack = Jackd::start(16_000, 256);
    bench.source(16_000 * 2 * 30, 5);
    // A stall timeout longer than the freeze: the jump must be caught from the capture clock alone.
    let config = bench.config(
        &bench.vmic_rt(),
        "rate = 16000\nsegment-seconds = 10\nperiod-ms = 16\nbuffer-ms = 1000\nstall-timeout-ms = 6000",
    );
    let daemon = Daemon::spawn(Daemon::command(&bench, &config, Some(&jack)));
    wait_for(Duration::from_secs(20), "half a second on disk", || {
        bench
            .buffered()
            .first()
            .is_some_and(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 4096 + 16_000))
    });
    // The whole process freezes: JACK skips the client, so no overrun is ever reported.
    kill(daemon.pid(), Signal::SIGSTOP).expect("stop");
    std::thread::sleep(Duration::from_secs(2));
    kill(daemon.pid(), Signal::SIGCONT).expect("cont");
    wait_for(
        Duration::from_secs(20),
        "a segment closed by the jump",
        || !bench.promoted().is_empty(),
    );
    std::thread::sleep(Duration::from_millis(500));
    kill(daemon.pid(), Signal::SIGTERM).expect("term");
    let status = daemon.wait(Duration::from_secs(10));
    assert!(status.success(), "SIGTERM stops cleanly: {status}");

    let files = bench.promoted();
    assert!(
        bench.buffered().is_empty(),
        "SIGTERM closed the open segment"
    );
    let texts: Vec<String> = files.iter().map(|f| read_segment(f).1).collect();
    // A loaded machine may add gaps of its own: look for the freeze.
    let at = texts
        .iter()
        .position(|t| guano::field(t, "FLEET|Closed By") == Some("discontinuity"))
        .expect("a segment closed by the jump");
    let next = texts.get(at + 1).expect("a segment after the jump");
    assert_eq!(guano::field(next, "FLEET|Gap Cause"), Some("discontinuity"));
    let gap: u64 = guano::field(next, "FLEET|Gap Before Ms")
        .expect("gap")
        .parse()
        .expect("ms");
    assert!(
        (1500..4000).contains(&gap),
        "the 2 s freeze is measured, got {gap} ms"
    );
    let last = texts.last().expect("segments");
    assert_eq!(guano::field(last, "FLEET|Closed By"), Some("shutdown"));
    let s = common::status(&bench).expect("status");
    assert!(s["devices"][0]["discontinuities"].as_u64() >= Some(1));
    assert_eq!(s["devices"][0]["state"], "stopped");
}

#[test]
fn a_device_that_appears_later_is_opened_after_the_debounce_and_reported_missing_until_then() {
    let bench = Bench::new();
    let name = Jackd::unique_name();
    bench.source(16_000 * 2 * 30, 9);
    let config = bench.config(
        &bench.vmic_rt(),
        "rate = 16000\nsegment-seconds = 1\nperiod-ms = 16\nbuffer-ms = 1000",
    );
    let mut cmd = Daemon::command(&bench, &config, None);
    cmd.env("JACK_DEFAULT_SERVER", &name)
        .env("JACK_NO_START_SERVER", "1");
    let _daemon = Daemon::spawn(cmd);
    wait_for(
        Duration::from_secs(10),
        "the device reported missing",
        || common::status(&bench).is_some_and(|s| s["devices"][0]["state"] == "missing"),
    );
    let s = common::status(&bench).expect("status");
    assert_eq!(s["healthy"], false, "a missing device is unhealthy");
    assert!(bench.promoted().is_empty());
    // The "microphone" is plugged in.
    let _jack = Jackd::start_named(name, 16_000, 256);
    wait_for(Duration::from_secs(20), "a segment from the device", || {
        !bench.promoted().is_empty()
    });
    // The status file follows within a tick.
    wait_for(Duration::from_secs(5), "a healthy status", || {
        common::status(&bench).is_some_and(|s| {
            s["devices"][0]["state"] == "recording"
                && s["healthy"] == true
                && s["devices"][0]["segments-written"].as_u64() >= Some(1)
        })
    });
}

#[test]
fn outside_its_schedule_a_device_is_idle_healthy_and_records_nothing() {
    let bench = Bench::new();
    bench.source(48_000 * 2 * 3, 1);
    let config = bench.config(&bench.vmic(), "rate = 48000");
    // A daily window that is closed now (local time is UTC+1 in the test config).
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        / 60
        + 60)
        % 1440;
    let (a, b) = ((now_min + 120) % 1440, (now_min + 180) % 1440);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(
        "[[devices]]",
        &format!(
            "[schedules.later]\nkind = \"daily\"\nwindows = [\"{:02}:{:02}-{:02}:{:02}\"]\n\n[[devices]]\nschedule = \"later\"",
            a / 60,
            a % 60,
            b / 60,
            b % 60
        ),
    );
    std::fs::write(&config, text).expect("config");
    let daemon = Daemon::spawn(Daemon::command(&bench, &config, None));
    wait_for(Duration::from_secs(10), "the device idle", || {
        common::status(&bench)
            .is_some_and(|s| s["devices"][0]["state"] == "idle" && s["healthy"] == true)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(bench.promoted().is_empty() && bench.buffered().is_empty());
    nix::sys::signal::kill(daemon.pid(), nix::sys::signal::Signal::SIGTERM).expect("term");
    assert!(daemon.wait(Duration::from_secs(10)).success());
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let bench = Bench::new();
    bench.source(48_000 * 2 * 3, 2);
    let config = bench.config(&bench.vmic(), "rate = 48000");
    let sock_path = bench.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // systemd sets WATCHDOG_PID to the service's pid: exec from a shell keeps the shell's.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_fleet-recorderd"))
        .arg("--config")
        .arg(&config)
        .args(["--duration", "1"])
        .env("XDG_CONFIG_HOME", bench.xdg())
        .env_remove("ALSA_CONFIG_PATH")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "10000000")
        .stderr(std::process::Stdio::null());
    assert!(Daemon::spawn(cmd).wait(Duration::from_secs(30)).success());
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_nonblocking(true).expect("nonblocking");
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let all = got.join("\n");
    for want in ["READY=1", "WATCHDOG=1", "STATUS=mic0", "STOPPING=1"] {
        assert!(all.contains(want), "{want} missing from {got:?}");
    }
    let ready = got
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("ready");
    let stopping = got
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .expect("stopping");
    assert!(ready < stopping);
}
