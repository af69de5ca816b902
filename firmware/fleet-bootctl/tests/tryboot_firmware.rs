//! The tryboot flow end to end: the real `fleet-bootctl` binary, called the way RAUC's
//! custom backend and the boot-check unit call it, on real files, with the Pi 5 firmware
//! simulated by the test: it reads `autoboot.txt`, honours and clears the one-shot tryboot
//! flag (set here by the injected reboot command), and reports the booted partition through
//! the `chosen/bootloader` device-tree files.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleet_core::boot::autoboot::{Autoboot, BootPartitions};
use fleet_core::slot::Slot;

const PARTITIONS: BootPartitions = BootPartitions { a: 2, b: 3 };

struct Pi {
    dir: tempfile::TempDir,
    config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    Healthy,
    Hangs,
    Unhealthy,
}

impl Pi {
    fn new() -> Pi {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["config", "data", "dt"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(
            dir.path().join("config/autoboot.txt"),
            Autoboot { committed: Slot::A }.render(&PARTITIONS),
        )
        .expect("autoboot.txt");
        let config = dir.path().join("bootctl.toml");
        let flag = dir.path().join("tryboot-flag");
        std::fs::write(
            &config,
            format!(
                "flow = \"tryboot\"\nattempts = 3\nlock-file = \"{root}/lock\"\n\n[tryboot]\nconfig-root = \"{root}/config\"\n\
                 data-root = \"{root}/data\"\nbootloader-dir = \"{root}/dt\"\nreboot-command = [\"touch\", \"{flag}\"]\n",
                root = dir.path().display(),
                flag = flag.display()
            ),
        )
        .expect("config");
        Pi { dir, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn bootctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleet-bootctl"))
            .args(args)
            .env("FLEET_BOOTCTL_CONFIG", &self.config)
            .output()
            .expect("run fleet-bootctl")
    }

    /// Runs a command that must succeed; returns its stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.bootctl(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    fn committed(&self) -> Slot {
        let text =
            std::fs::read_to_string(self.path("config/autoboot.txt")).expect("autoboot.txt exists");
        Autoboot::parse(&text, &PARTITIONS)
            .expect("autoboot.txt is always valid")
            .committed
    }

    /// The firmware: picks the partition, clears the one-shot flag, tells Linux what it did.
    fn power_on(&self) -> Slot {
        let flag = self.path("tryboot-flag");
        let tryboot = flag.exists();
        if tryboot {
            std::fs::remove_file(&flag).expect("firmware clears the flag");
        }
        let committed = self.committed();
        let slot = if tryboot {
            committed.other()
        } else {
            committed
        };
        write_be(&self.path("dt/partition"), u32::from(PARTITIONS.of(slot)));
        write_be(&self.path("dt/tryboot"), u32::from(tryboot));
        slot
    }

    /// One boot of a station whose slots behave as `images` say. Returns the slot booted and
    /// whether userspace asked for a trial reboot.
    fn boot(&self, images: [Image; 2]) -> (Slot, bool) {
        let slot = self.power_on();
        match images[slot as usize] {
            Image::Hangs => (slot, false),
            Image::Healthy | Image::Unhealthy => {
                self.ok(&["boot-check"]);
                (slot, self.path("tryboot-flag").exists())
            }
        }
    }

    /// RAUC's calls around an install into `slot`, then the updater's trial reboot.
    fn install(&self, slot: &str) {
        self.ok(&["set-state", slot, "bad"]);
        assert_eq!(self.ok(&["get-state", slot]), "bad");
        self.ok(&["set-primary", slot]);
        assert_eq!(self.ok(&["get-primary"]), slot);
        self.ok(&["reboot-trial"]);
        assert!(
            self.path("tryboot-flag").exists(),
            "the trial reboot sets the one-shot flag"
        );
    }
}

fn write_be(path: &Path, value: u32) {
    std::fs::write(path, value.to_be_bytes()).expect("device-tree file");
}

#[test]
fn healthy_trial_is_committed_by_rauc_mark_good() {
    let pi = Pi::new();
    let images = [Image::Healthy; 2];
    assert_eq!(pi.boot(images), (Slot::A, false));
    assert_eq!(pi.ok(&["get-current"]), "A");
    pi.install("B");
    assert_eq!(pi.boot(images), (Slot::B, false));
    assert_eq!(pi.ok(&["get-current"]), "B");
    assert!(
        pi.ok(&["status"])
            .contains("slot B: trial, 2 attempts left (booted)")
    );
    pi.ok(&["set-state", "B", "good"]);
    assert_eq!(
        std::fs::read_to_string(pi.path("config/autoboot.txt")).expect("read"),
        "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
    );
    // Every later boot stays on B, and A is kept as a good rollback target.
    for _ in 0..3 {
        assert_eq!(pi.boot(images), (Slot::B, false));
    }
    assert_eq!(pi.ok(&["get-state", "A"]), "good");
    assert_eq!(pi.ok(&["get-primary"]), "B");
}

#[test]
fn hanging_trial_returns_to_the_old_slot_and_is_marked_bad_after_three_attempts() {
    for bad_image in [Image::Hangs, Image::Unhealthy] {
        let pi = Pi::new();
        let images = [Image::Healthy, bad_image];
        pi.boot(images);
        pi.install("B");
        let mut boots = Vec::new();
        loop {
            let (slot, rebooting) = pi.boot(images);
            boots.push(slot);
            if slot == Slot::A && !rebooting {
                break;
            }
            assert!(boots.len() < 20, "{bad_image:?}: never settled: {boots:?}");
        }
        assert_eq!(
            boots,
            vec![Slot::B, Slot::A, Slot::B, Slot::A, Slot::B, Slot::A],
            "{bad_image:?}"
        );
        assert_eq!(pi.ok(&["get-state", "B"]), "bad");
        assert_eq!(pi.ok(&["get-primary"]), "A");
        assert_eq!(pi.committed(), Slot::A);
        // No further trial reboots: the slot is given up until the next install.
        assert_eq!(pi.boot(images), (Slot::A, false));
        assert!(!pi.bootctl(&["reboot-trial"]).status.success());
    }
}

#[test]
fn only_the_booted_slot_can_be_marked_good() {
    let pi = Pi::new();
    pi.boot([Image::Healthy; 2]);
    pi.ok(&["set-state", "B", "bad"]);
    pi.ok(&["set-primary", "B"]);
    let out = pi.bootctl(&["set-state", "B", "good"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unable to mark the slot good"));
    assert_eq!(pi.committed(), Slot::A);
}

#[test]
fn power_loss_after_arming_still_runs_the_trial_on_the_next_boot() {
    let pi = Pi::new();
    let images = [Image::Healthy; 2];
    pi.boot(images);
    pi.ok(&["set-state", "B", "bad"]);
    pi.ok(&["set-primary", "B"]);
    // Power cut before the updater's trial reboot: A comes up and boot-check runs the trial.
    assert_eq!(pi.boot(images), (Slot::A, true));
    assert_eq!(pi.boot(images), (Slot::B, false));
    pi.ok(&["set-state", "B", "good"]);
    assert_eq!(pi.committed(), Slot::B);
}

#[test]
fn check_config_accepts_a_valid_file_and_exits_2_on_an_invalid_one() {
    let pi = Pi::new();
    assert!(pi.ok(&["--check-config"]).contains("valid (tryboot flow)"));
    std::fs::write(&pi.config, "flow = \"tryboot\"\nattempts = 0\n").expect("write");
    let out = pi.bootctl(&["--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("attempts: 0 is outside 1..=9")
            && stderr.contains("tryboot: section missing"),
        "{stderr}"
    );
}

/// Every prefix of the commit's two writes, made on the real files the way the backend makes
/// them, followed by a power cut: the station boots and reports a consistent state.
#[test]
fn power_loss_between_the_commit_writes_boots_a_good_slot_and_keeps_the_old_one_as_fallback() {
    use fleet_core::boot::tryboot::{self, OtherHealth, Record, TrybootState, Write};
    let images = [Image::Healthy; 2];
    let on_trial = TrybootState {
        autoboot: Autoboot { committed: Slot::A },
        record: Some(Record {
            slot: Slot::B,
            health: OtherHealth::Trial { attempts_left: 2 },
        }),
    };
    let writes = tryboot::plan_mark_good(&on_trial, Slot::B, Slot::B).expect("booted trial");
    for k in 0..=writes.len() {
        let pi = Pi::new();
        pi.boot(images);
        std::fs::create_dir_all(pi.path("data/fleet/boot")).expect("mkdir");
        std::fs::write(
            pi.path("data/fleet/boot/attempts"),
            on_trial.record.expect("record").render(),
        )
        .expect("record");
        for w in &writes[..k] {
            match w {
                Write::Autoboot(a) => {
                    std::fs::write(pi.path("config/autoboot.txt"), a.render(&PARTITIONS))
                }
                Write::Record(r) => std::fs::write(pi.path("data/fleet/boot/attempts"), r.render()),
            }
            .expect("write");
        }
        // Power cut; on the next boot the station comes up on a committed slot and says so.
        let (slot, rebooting) = pi.boot(images);
        let expected = if k == 0 { Slot::A } else { Slot::B };
        if k == 0 {
            // The commit never landed: the trial is retried, and commits this time.
            assert!(rebooting, "k={k}");
            assert_eq!(pi.boot(images), (Slot::B, false));
            pi.ok(&["set-state", "B", "good"]);
        } else {
            assert_eq!((slot, rebooting), (expected, false), "k={k}");
        }
        assert_eq!(pi.committed(), Slot::B, "k={k}");
        assert_eq!(pi.ok(&["get-primary"]), "B");
        // After a cut between the two writes the boot check finished the commit: A, committed
        // until then, is still the rollback target.
        assert_eq!(pi.ok(&["get-state", "A"]), "good", "k={k}");
        assert_eq!(
            std::fs::read_to_string(pi.path("data/fleet/boot/attempts")).expect("record"),
            "slot=A\nstate=good\n",
            "k={k}"
        );
    }
}
