//! Our env file against libubootenv's `fw_printenv` / `fw_setenv` (the real tools, installed
//! by tests/setup.d/10-bootctl.sh).
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fleet_bootctl::uenv::{self, DEFAULT_ENV_SIZE};
use fleet_bootctl::{UbootBackend, UbootPaths};
use fleet_core::boot::uboot::{self, Env};
use fleet_core::boot::{Attempts, DEFAULT_ATTEMPTS};
use fleet_core::ports::BootControl;
use fleet_core::slot::{Slot, SlotHealth};

fn fw_config(dir: &Path, env_file: &Path) -> std::path::PathBuf {
    let config = dir.join("fw_env.config");
    std::fs::write(
        &config,
        format!("{} 0x0000 {DEFAULT_ENV_SIZE:#x}\n", env_file.display()),
    )
    .expect("write fw_env.config");
    config
}

fn fw_printenv(config: &Path) -> Env {
    let out = Command::new("fw_printenv")
        .arg("-c")
        .arg(config)
        .output()
        .expect("fw_printenv runs (install it with tests/setup.d/10-bootctl.sh)");
    assert!(
        out.status.success(),
        "fw_printenv failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn fw_setenv(config: &Path, key: &str, value: &str) {
    let status = Command::new("fw_setenv")
        .arg("-c")
        .arg(config)
        .args([key, value])
        .status()
        .expect("fw_setenv runs");
    assert!(status.success());
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn fw_printenv_reads_the_env_file_we_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("uboot.env");
    let ours = env(&[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "2"),
        ("FLEET_TRIAL", "B"),
        ("bootargs", "x=y z"),
    ]);
    std::fs::write(
        &file,
        uenv::encode(&ours, DEFAULT_ENV_SIZE).expect("encode"),
    )
    .expect("write");
    assert_eq!(fw_printenv(&fw_config(dir.path(), &file)), ours);
}

#[test]
fn we_read_the_env_file_fw_setenv_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("uboot.env");
    std::fs::write(
        &file,
        uenv::encode(&env(&[("BOOT_ORDER", "A B")]), DEFAULT_ENV_SIZE).expect("encode"),
    )
    .expect("write");
    let config = fw_config(dir.path(), &file);
    fw_setenv(&config, "BOOT_A_LEFT", "1");
    fw_setenv(&config, "BOOT_ORDER", "B A");
    let read =
        uenv::decode(&std::fs::read(&file).expect("read"), DEFAULT_ENV_SIZE).expect("decode");
    assert_eq!(read, env(&[("BOOT_ORDER", "B A"), ("BOOT_A_LEFT", "1")]));
}

#[test]
fn backend_changes_are_visible_to_fw_printenv_and_survive_the_boot_script() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("uboot.env");
    let cmdline = dir.path().join("cmdline");
    let attempts: Attempts = DEFAULT_ATTEMPTS;
    let backend = UbootBackend {
        paths: UbootPaths {
            env_file: file.clone(),
            cmdline: cmdline.clone(),
            lock: dir.path().join("lock"),
        },
        env_size: DEFAULT_ENV_SIZE,
        attempts,
    };
    let config = fw_config(dir.path(), &file);
    // First boot of a fresh image: no env file, the script's defaults pick A.
    let decision = uboot::decide_boot(
        &backend.read_env().expect("missing file reads as empty"),
        attempts,
    );
    let uboot::BootDecision::Boot {
        slot: Slot::A,
        env: written,
    } = decision
    else {
        panic!("{decision:?}")
    };
    std::fs::write(
        &file,
        uenv::encode(&written, DEFAULT_ENV_SIZE).expect("encode"),
    )
    .expect("bootloader write");
    std::fs::write(
        &cmdline,
        "console=ttyAMA0 root=/dev/vda2 rauc.slot=A rootwait\n",
    )
    .expect("cmdline");
    backend.boot_check().expect("boot check");
    assert_eq!(fw_printenv(&config)["BOOT_A_LEFT"], "3");
    // Install into B: RAUC marks it bad, writes it, makes it primary.
    backend.mark_bad(Slot::B).expect("mark bad");
    backend.rauc_set_primary(Slot::B).expect("arm");
    let printed = fw_printenv(&config);
    assert_eq!(
        printed,
        env(&[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
            ("FLEET_TRIAL", "B")
        ])
    );
    // Someone adds a variable with fw_setenv: our next write keeps it.
    fw_setenv(&config, "fleet_note", "kept");
    // The script boots B.
    let decision = uboot::decide_boot(&backend.read_env().expect("read"), attempts);
    let uboot::BootDecision::Boot {
        slot: Slot::B,
        env: written,
    } = decision
    else {
        panic!("{decision:?}")
    };
    std::fs::write(
        &file,
        uenv::encode(&written, DEFAULT_ENV_SIZE).expect("encode"),
    )
    .expect("bootloader write");
    std::fs::write(&cmdline, "root=/dev/vda3 rauc.slot=B\n").expect("cmdline");
    assert_eq!(
        backend.status().expect("status").slot(Slot::B).health,
        SlotHealth::Trial
    );
    backend.mark_good(Slot::B).expect("commit");
    let printed: BTreeMap<_, _> = fw_printenv(&config);
    assert_eq!(
        printed,
        env(&[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3")
        ])
    );
    assert!(
        backend.mark_good(Slot::A).is_err(),
        "never mark good a slot that is not booted"
    );
}

#[test]
fn damaged_env_file_is_reported_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("uboot.env");
    let mut bytes = uenv::encode(&env(&[("BOOT_ORDER", "A B")]), DEFAULT_ENV_SIZE).expect("encode");
    bytes[8] ^= 0x20;
    std::fs::write(&file, &bytes).expect("write");
    std::fs::write(dir.path().join("cmdline"), "rauc.slot=A").expect("cmdline");
    let backend = UbootBackend {
        paths: UbootPaths {
            env_file: file.clone(),
            cmdline: dir.path().join("cmdline"),
            lock: dir.path().join("lock"),
        },
        env_size: DEFAULT_ENV_SIZE,
        attempts: DEFAULT_ATTEMPTS,
    };
    let err = backend.arm_trial(Slot::B).expect_err("bad CRC");
    assert!(
        err.to_string().contains("unable to read the U-Boot env"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).expect("read"), bytes, "file untouched");
}
