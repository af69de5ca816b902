//! The `fleet` binary against a real station on the bench: the real `rauc service` on a private
//! D-Bus, file-backed ext4 slots, `fleet-bootctl` as RAUC's custom backend on the U-Boot flow,
//! the bundles of `bundles/build-test-bundles.sh` (plain: this host has no device-mapper).
//! Needs root, rauc, dbus-daemon, e2fsprogs, openssl (`tests/setup.d/20-rauc.sh`); without them
//! the RAUC tests print SKIP and why.

#[macro_use]
mod station;

use std::process::Command;

use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::slot::Slot;
use fleet_core::update::engine::{Job, Phase, Policy, State};
use fleet_core::update::offer::Station as EngineStation;
use fleet_core::update::{BundleId, KeyId};
use station::{COMPATIBLE, Ran, STATION_ID, SlotB, Station, bundle};

/// Every line fits a 80-column console and carries no escape sequences.
fn assert_console_friendly(ran: &Ran) {
    for line in ran.all().lines() {
        assert!(line.chars().count() <= 80, "line over 80 columns: {line:?}");
        assert!(!line.contains('\u{1b}'), "escape sequence in {line:?}");
    }
}

/// Everything printed with line breaks folded to spaces, for wording that may be wrapped.
fn joined(ran: &Ran) -> String {
    ran.all().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_starting<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no line starting with {label:?} in:\n{text}"))
}

/// The updater's journal as `fleet-updated` writes it: `{"v":1,"state":{"engine":...}}`.
fn write_journal(station: &Station, phase: Phase) {
    let mut state = State::new(
        EngineStation {
            device_id: DeviceId::new(STATION_ID).expect("valid id"),
            groups: Vec::new(),
            compatible: COMPATIBLE.to_owned(),
        },
        Policy::default(),
        Slot::A,
        Version::new(1, 0, 0),
    );
    state.phase = phase;
    let journal = serde_json::json!({
        "v": 1,
        "state": {"engine": state, "state-seq": 4, "event-seq": 9},
    });
    std::fs::write(
        station.path("data/fleet/updated/journal.json"),
        serde_json::to_vec_pretty(&journal).expect("json"),
    )
    .expect("write journal");
}

fn job() -> Job {
    Job {
        update_id: UpdateId::new("u-2026-11").expect("valid id"),
        sequence: 3,
        bundle_id: BundleId::from_bytes([7; 32]),
        bundle_size: 4 * 1024 * 1024,
        version: Version::new(2, 0, 0),
        manifest_hash: None,
        key_id: KeyId::from_bytes([1; 8]),
    }
}

#[test]
fn status_shows_the_running_slot_both_slots_rauc_the_pending_update_and_no_systemd() {
    let _f = fixtures_or_skip!();
    let station = Station::start(SlotB::Flashed).expect("station starts");
    write_journal(
        &station,
        Phase::Downloading {
            job: job(),
            held_bytes: 1024 * 1024,
        },
    );
    let started = std::time::Instant::now();
    let ran = station.fleet(&["status"], "");
    // A figure for the report, not an assertion: a person waits for this at the console.
    eprintln!(
        "fleet status took {} ms:\n{}",
        started.elapsed().as_millis(),
        ran.stdout
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_console_friendly(&ran);
    let out = &ran.stdout;
    assert_eq!(
        line_starting(out, "station"),
        format!("station     {STATION_ID}")
    );
    assert_eq!(
        line_starting(out, "boot"),
        "boot        uboot flow, running A, next boot A"
    );
    let a = line_starting(out, "slot A");
    assert!(a.contains("good") && a.contains("1.0.0 (image)"), "{a}");
    assert!(a.contains("running, next boot"), "{a}");
    let b = line_starting(out, "slot B");
    assert!(b.contains("good") && b.contains("not recorded"), "{b}");
    assert_eq!(
        line_starting(out, "rauc"),
        format!("rauc        idle, compatible {COMPATIBLE}")
    );
    assert_eq!(
        line_starting(out, "update"),
        "update      downloading 2.0.0 (update u-2026-11), 1.0 MiB of 4.0 MiB"
    );
    assert!(line_starting(out, "data").contains("free"), "{out}");
    assert!(
        line_starting(out, "daemons").starts_with("daemons     unknown: systemd is not running"),
        "{out}"
    );
}

#[test]
fn status_without_rauc_still_shows_the_boot_flow_and_says_why_rauc_is_missing() {
    let _f = fixtures_or_skip!();
    let mut station = Station::start(SlotB::Flashed).expect("station starts");
    station.kill_rauc();
    let ran = station.fleet(&["status"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        line_starting(&ran.stdout, "rauc").starts_with("rauc        unreachable:"),
        "{ran:?}"
    );
    assert_eq!(
        line_starting(&ran.stdout, "boot"),
        "boot        uboot flow, running A, next boot A"
    );
    assert!(line_starting(&ran.stdout, "update").contains("no updater journal"));
}

#[test]
fn install_of_a_good_bundle_lands_in_the_other_slot_with_progress_and_arms_a_trial() {
    let f = fixtures_or_skip!();
    let station = Station::start(SlotB::Flashed).expect("station starts");
    let a_before = station.slot_hash(Slot::A);
    let path = bundle(f, "good-2.0.0");
    let started = std::time::Instant::now();
    let ran = station.fleet(&["install", path.to_str().expect("utf-8 path")], "");
    eprintln!(
        "fleet install took {} ms:\n{}",
        started.elapsed().as_millis(),
        ran.stdout
    );
    assert_eq!(ran.code, 0, "{ran:?}\nrauc log:\n{}", station.log());
    assert_console_friendly(&ran);
    let out = &ran.stdout;
    assert_eq!(
        line_starting(out, "target"),
        "target      slot B (running A)"
    );
    assert!(
        out.lines().any(|l| l.starts_with("100%  Installing done")),
        "progress reaches 100%:\n{out}"
    );
    assert!(
        out.lines().filter(|l| l.trim_start().contains('%')).count() >= 3,
        "progress lines:\n{out}"
    );
    assert_eq!(
        line_starting(out, "installed"),
        "installed   2.0.0 in slot B"
    );
    assert_eq!(station.slot_version(Slot::B), "2.0.0");
    assert_eq!(
        station.slot_hash(Slot::A),
        a_before,
        "the running slot is untouched"
    );
    assert_eq!(station.backend("get-primary"), "B");

    let ran = station.fleet(&["status"], "");
    eprintln!("fleet status after the install:\n{}", ran.stdout);
    let b = line_starting(&ran.stdout, "slot B");
    assert!(b.contains("trial") && b.contains("2.0.0"), "{b}");
    assert!(b.contains("next boot, 3 attempts left"), "{b}");
}

#[test]
fn every_broken_bundle_is_refused_with_raucs_reason_and_nothing_is_written() {
    let f = fixtures_or_skip!();
    let station = Station::start(SlotB::Flashed).expect("station starts");
    let index = std::fs::read_to_string(f.bundles.join("index.txt")).expect("bundle index");
    let broken: Vec<(&str, &str)> = index
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, expect)| *expect != "ok")
        .collect();
    assert!(broken.len() >= 5, "the broken set: {broken:?}");
    for (name, expect) in broken {
        let before = station.slot_hash(Slot::B);
        let path = bundle(f, name);
        let ran = station.fleet(&["install", path.to_str().expect("utf-8 path")], "");
        assert_eq!(ran.code, 1, "{name}: {ran:?}");
        assert_console_friendly(&ran);
        // RAUC's reason may be wrapped over lines: compare with the lines joined.
        assert!(
            joined(&ran).to_lowercase().contains(&expect.to_lowercase()),
            "{name}: output should carry RAUC's reason {expect:?}:\n{}",
            ran.all()
        );
        assert!(
            ran.stdout.contains("refused     by RAUC:"),
            "{name}: {ran:?}"
        );
        eprintln!("{name}:\n{}", ran.all());
        assert_eq!(station.slot_hash(Slot::B), before, "{name} wrote to slot B");
        assert_eq!(station.backend("get-primary"), "A", "{name}");
    }
}

#[test]
fn a_plain_bundle_is_refused_before_rauc_sees_it_on_a_production_station() {
    let f = fixtures_or_skip!();
    let station = Station::start(SlotB::Flashed).expect("station starts");
    let conf = std::fs::read_to_string(station.path("fleet.toml")).expect("config");
    std::fs::write(
        station.path("fleet.toml"),
        conf.replace("profile = \"development\"", "profile = \"production\""),
    )
    .expect("write config");
    let before = station.slot_hash(Slot::B);
    let path = bundle(f, "good-2.0.0");
    let ran = station.fleet(&["install", path.to_str().expect("utf-8 path")], "");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(joined(&ran).contains("is a plain bundle"), "{ran:?}");
    assert!(joined(&ran).contains("nothing was changed"), "{ran:?}");
    assert_eq!(station.slot_hash(Slot::B), before);
    let calls = std::fs::read_to_string(station.path("boot/calls.log")).unwrap_or_default();
    assert!(
        !calls.contains("set-state"),
        "RAUC never started an install: {calls}"
    );
    // A truncated file has no readable format: refused too.
    let ran = station.fleet(
        &["install", bundle(f, "truncated").to_str().expect("utf-8")],
        "",
    );
    assert_eq!(ran.code, 3, "{ran:?}");
}

#[test]
fn mark_good_is_refused_for_the_slot_that_is_not_running() {
    let _f = fixtures_or_skip!();
    let station = Station::start(SlotB::Flashed).expect("station starts");
    let ran = station.fleet(&["mark-good", "B"], "");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(
        ran.stderr
            .contains("only the running slot (A) can be marked good"),
        "{ran:?}"
    );
    let calls = std::fs::read_to_string(station.path("boot/calls.log")).unwrap_or_default();
    assert!(!calls.contains("set-state"), "nothing was marked: {calls}");
    // The running slot can be.
    let ran = station.fleet(&["mark-good"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stdout.contains("marked slot rootfs.0 as good"),
        "{ran:?}"
    );
    assert_eq!(station.backend("get-state A"), "good");
}

#[test]
fn rollback_is_refused_toward_a_trial_then_moves_to_the_other_good_slot_once_confirmed() {
    let f = fixtures_or_skip!();
    let mut station = Station::start(SlotB::Flashed).expect("station starts");
    let path = bundle(f, "good-2.0.0");
    let ran = station.fleet(&["install", path.to_str().expect("utf-8")], "");
    assert_eq!(ran.code, 0, "{ran:?}");

    // B is on trial: not a rollback target.
    let ran = station.fleet(&["rollback", "--yes"], "");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(joined(&ran).contains("slot B is on trial"), "{ran:?}");

    // The trial boots and is committed from the console.
    station.boot_into(Slot::B);
    let ran = station.fleet(&["mark-good"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(station.backend("get-primary"), "B");

    // Back to A, the good slot, after a typed "yes" (and not without it).
    let ran = station.fleet(&["rollback"], "no\n");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert_eq!(station.backend("get-primary"), "B", "declined: unchanged");
    let ran = station.fleet(&["rollback"], "yes\n");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_console_friendly(&ran);
    assert!(ran.stdout.contains("slot A is primary"), "{ran:?}");
    assert_eq!(station.backend("get-primary"), "A");
    let status = station.fleet(&["status"], "");
    assert_eq!(
        line_starting(&status.stdout, "boot"),
        "boot        uboot flow, running B, next boot A"
    );
}

#[test]
fn rollback_is_refused_toward_a_bad_slot_and_the_last_good_slot_cannot_be_marked_bad() {
    let _f = fixtures_or_skip!();
    let station = Station::start(SlotB::Flashed).expect("station starts");
    let ran = station.fleet(&["mark-bad", "B", "--yes"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(station.backend("get-state B"), "bad");

    let ran = station.fleet(&["rollback", "--yes"], "");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(joined(&ran).contains("slot B is marked bad"), "{ran:?}");
    assert_eq!(station.backend("get-primary"), "A");

    let ran = station.fleet(&["mark-bad", "A", "--yes"], "");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(joined(&ran).contains("no good slot"), "{ran:?}");
    assert_eq!(station.backend("get-state A"), "good");
}

#[test]
fn rollback_is_refused_toward_an_empty_slot() {
    let _f = fixtures_or_skip!();
    let station = Station::start(SlotB::Empty).expect("station starts");
    let status = station.fleet(&["status"], "");
    assert!(
        line_starting(&status.stdout, "slot B").contains("empty"),
        "{status:?}"
    );
    let ran = station.fleet(&["rollback", "--yes"], "");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(joined(&ran).contains("slot B is empty"), "{ran:?}");
    assert_eq!(station.backend("get-primary"), "A");
}

/// A data root and configuration without RAUC, for the commands that need none.
fn bare_station() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    for sub in [
        "data/fleet/identity",
        "data/fleet/boot",
        "data/fleet/update",
        "data/fleet/updated",
        "data/fleet/recordings/data",
        "data/fleet/retention",
        "data/rauc",
    ] {
        std::fs::create_dir_all(d.path().join(sub)).expect("mkdir");
    }
    std::fs::write(
        d.path().join("data/fleet/identity/updated.toml"),
        format!("device-id = \"{STATION_ID}\"\n"),
    )
    .expect("identity");
    std::fs::write(d.path().join("data/fleet/recordings/data/1.flac"), b"x").expect("rec");
    std::fs::write(d.path().join("data/fleet/update/version-floor"), b"1.0.0\n").expect("floor");
    let conf = d.path().join("fleet.toml");
    std::fs::write(
        &conf,
        format!(
            "data-root = \"{0}/data\"\nsystemd-dir = \"{0}/none\"\njournald-dir = \"{0}/none\"\n",
            d.path().display()
        ),
    )
    .expect("config");
    (d, conf)
}

fn fleet_bare(conf: &std::path::Path, args: &[&str], input: &str) -> Ran {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(args)
        .env("FLEET_CONFIG", conf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run fleet");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().expect("fleet finishes");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn factory_reset_needs_the_typed_station_id_then_erases_all_but_identity_boot_and_floor() {
    let (d, conf) = bare_station();
    let data = d.path().join("data");
    for input in ["", "yes\n", "stn-bench-8\n"] {
        let ran = fleet_bare(&conf, &["factory-reset"], input);
        assert_eq!(ran.code, 3, "{input:?}: {ran:?}");
        assert!(joined(&ran).contains("nothing was erased"), "{ran:?}");
        assert!(data.join("fleet/recordings/data/1.flac").exists());
    }
    let ran = fleet_bare(&conf, &["factory-reset"], &format!("{STATION_ID}\n"));
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_console_friendly(&ran);
    assert!(
        ran.stdout.contains(STATION_ID),
        "the prompt names the id: {ran:?}"
    );
    for gone in ["recordings", "retention", "updated"] {
        assert!(!data.join("fleet").join(gone).exists(), "{gone} erased");
    }
    for kept in [
        "fleet/identity/updated.toml",
        "fleet/boot",
        "fleet/update/version-floor",
        "rauc",
    ] {
        assert!(data.join(kept).exists(), "{kept} kept");
    }
    assert!(!data.join("fleet/.factory-reset").exists());
    assert!(!data.join("fleet/.factory-reset.trash").exists());

    // --all takes the identity too, confirmed on the command line.
    let ran = fleet_bare(
        &conf,
        &["factory-reset", "--all", "--confirm", STATION_ID],
        "",
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(!data.join("fleet/identity").exists());
    assert!(data.join("fleet/update/version-floor").exists());
}

#[test]
fn a_factory_reset_cut_by_power_loss_is_reported_and_finished_without_asking_again() {
    let (d, conf) = bare_station();
    let fleet_dir = d.path().join("data/fleet");
    // The state a power cut leaves after the intent and one move.
    std::fs::write(
        fleet_dir.join(".factory-reset"),
        "recordings\nretention\nupdated\n",
    )
    .expect("intent");
    std::fs::create_dir(fleet_dir.join(".factory-reset.trash")).expect("trash");
    std::fs::rename(
        fleet_dir.join("updated"),
        fleet_dir.join(".factory-reset.trash/updated"),
    )
    .expect("move");
    let status = fleet_bare(&conf, &["status"], "");
    assert!(
        status.stdout.contains("unfinished factory reset"),
        "{status:?}"
    );
    let ran = fleet_bare(&conf, &["factory-reset"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(!fleet_dir.join("recordings").exists());
    assert!(!fleet_dir.join(".factory-reset.trash").exists());
    assert!(fleet_dir.join("identity/updated.toml").exists());
}

#[test]
fn logs_say_clearly_when_the_journal_is_unavailable() {
    let (_d, conf) = bare_station();
    let ran = fleet_bare(&conf, &["logs", "-n", "20"], "");
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.stderr
            .contains("the journal is unavailable: journald is not running"),
        "{ran:?}"
    );
    assert_console_friendly(&ran);
}

#[test]
fn an_invalid_configuration_exits_2_and_check_config_accepts_a_valid_one() {
    let (d, conf) = bare_station();
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "colour = true\n").expect("write");
    assert_eq!(fleet_bare(&bad, &["status"], "").code, 2);
    assert_eq!(fleet_bare(&bad, &["--check-config"], "").code, 2);
    // A valid fleet.toml whose bootctl config is missing is invalid as a whole.
    let ran = fleet_bare(&conf, &["--check-config"], "");
    assert_eq!(ran.code, 2, "{ran:?}");
    let missing = d.path().join("missing.toml");
    assert_eq!(
        fleet_bare(&missing, &["status"], "").code,
        2,
        "a named file must exist"
    );
}

/// A Pi 5 (tryboot flow) without RAUC: `autoboot.txt` on the config partition, the firmware's
/// `chosen/bootloader` values, the attempt record on the data partition.
fn tryboot_station() -> (tempfile::TempDir, std::path::PathBuf) {
    let (d, conf) = bare_station();
    let p = d.path();
    for sub in ["config", "bootloader"] {
        std::fs::create_dir_all(p.join(sub)).expect("mkdir");
    }
    std::fs::write(
        p.join("config/autoboot.txt"),
        "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n",
    )
    .expect("autoboot");
    std::fs::write(p.join("bootloader/partition"), 2u32.to_be_bytes()).expect("partition");
    std::fs::write(p.join("bootloader/tryboot"), 0u32.to_be_bytes()).expect("tryboot");
    std::fs::write(
        p.join("bootctl.toml"),
        format!(
            "flow = \"tryboot\"\nlock-file = \"{0}/bootctl.lock\"\n[tryboot]\n\
             config-root = \"{0}/config\"\ndata-root = \"{0}/data\"\n\
             bootloader-dir = \"{0}/bootloader\"\n",
            p.display()
        ),
    )
    .expect("bootctl config");
    let text = std::fs::read_to_string(&conf).expect("config");
    std::fs::write(
        &conf,
        format!(
            "{text}bootctl-config = \"{0}/bootctl.toml\"\ndbus-address = \"unix:path={0}/no-bus\"\n",
            p.display()
        ),
    )
    .expect("config");
    (d, conf)
}

#[test]
fn on_the_tryboot_flow_a_fresh_station_offers_no_rollback_and_a_good_record_allows_one() {
    let (d, conf) = tryboot_station();
    let ran = fleet_bare(&conf, &["--check-config"], "");
    assert_eq!(ran.code, 0, "both configurations are valid: {ran:?}");
    let ran = fleet_bare(&conf, &["status"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        line_starting(&ran.stdout, "boot"),
        "boot        tryboot flow, running A, next boot A"
    );
    assert!(
        line_starting(&ran.stdout, "slot B").starts_with("slot B      bad"),
        "no record: the other slot is not known good: {ran:?}"
    );
    assert!(line_starting(&ran.stdout, "rauc").contains("unreachable"));

    let ran = fleet_bare(&conf, &["rollback", "--yes"], "");
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(joined(&ran).contains("slot B is marked bad"), "{ran:?}");

    // After a commit of A with B kept as the rollback target, B is good.
    std::fs::write(
        d.path().join("data/fleet/boot/attempts"),
        "slot=B\nstate=good\n",
    )
    .expect("record");
    let ran = fleet_bare(&conf, &["rollback", "--yes"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    let autoboot = std::fs::read_to_string(d.path().join("config/autoboot.txt")).expect("read");
    assert!(
        autoboot.starts_with("[all]\ntryboot_a_b=1\nboot_partition=3\n"),
        "B committed in autoboot.txt: {autoboot}"
    );
    let ran = fleet_bare(&conf, &["status"], "");
    assert_eq!(
        line_starting(&ran.stdout, "boot"),
        "boot        tryboot flow, running A, next boot B"
    );

    // Without RAUC, marks go straight to the boot flow, and say so.
    let ran = fleet_bare(&conf, &["mark-bad", "B", "--yes"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(joined(&ran).contains("using the boot flow"), "{ran:?}");
    let record = std::fs::read_to_string(d.path().join("data/fleet/boot/attempts")).expect("read");
    assert!(record.contains("state=bad"), "{record}");
    let ran = fleet_bare(&conf, &["mark-good"], "");
    assert_eq!(ran.code, 0, "{ran:?}");
    let ran = fleet_bare(&conf, &["status"], "");
    assert_eq!(
        line_starting(&ran.stdout, "boot"),
        "boot        tryboot flow, running A, next boot A"
    );
}

#[test]
fn help_of_every_command_fits_an_80_column_console_and_names_the_exit_codes() {
    let (_d, conf) = bare_station();
    for command in [
        "",
        "status",
        "rollback",
        "install",
        "mark-good",
        "mark-bad",
        "logs",
        "factory-reset",
    ] {
        let args: Vec<&str> = [command, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let ran = fleet_bare(&conf, &args, "");
        assert_eq!(ran.code, 0, "{command}: {ran:?}");
        assert_console_friendly(&ran);
        if command.is_empty() {
            assert!(joined(&ran).contains("3 refused for safety"), "{ran:?}");
        }
    }
    assert_eq!(fleet_bare(&conf, &["rollback", "--bogus"], "").code, 2);
}
